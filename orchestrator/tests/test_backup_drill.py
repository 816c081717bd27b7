"""The restore drill on the local fleet: a real PostgreSQL (Debian's) with known rows on one
fleet node, backed up with restic (Debian's) to an SFTP repository on another fleet node by
the backup script the NixOS module runs (modules/scripts/backup.sh, behind the node wrapper
/etc/nix-infra/backup/<app>, called by nix_infra.backup over SSH); the data destroyed and
restored; a restore to another path; a wrong password; a backup killed half-way.

Figures (data size, seconds, rows) are printed; `./bin/test -q -s -k drill` shows them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nix_infra import backup
from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore, NodeFacts
from nix_infra.ssh import SshTarget, ssh_script_argv

from .conftest import run_cli
from .fleet import SSH_PORT, FakeFleet

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "modules" / "scripts" / "backup.sh"
PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
APP = "db"

pytestmark = pytest.mark.skipif(
    not PG_BINS or shutil.which("restic") is None or shutil.which("systemd-creds") is None,
    reason="the drill needs Debian's postgresql, restic and systemd-creds (bin/setup installs them)",
)


def _keypair(path: Path) -> tuple[str, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.read_text(), (path.with_suffix(".pub")).read_text().strip()


@dataclass
class Drill:
    db: SshTarget
    repo_dir: Path
    volume: Path
    cluster: Path  # a cluster repo whose node worker001 (app api) is the fleet node

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        m = ["--manifest", str(self.cluster / "manifest.json"), "--ssh-key", str(self.db.identity)]
        return run_cli(capsys, *m, *args)

    def sh(self, script: str, *, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ssh_script_argv(self.db, script)
        p = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise AssertionError(f"{script}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def sql(self, query: str, database: str = "app") -> str:
        return self.sh(
            f"cd / && runuser -u postgres -- psql -h /run/postgresql -X -A -t -v ON_ERROR_STOP=1 -d {database}",
            input_text=query,
        ).stdout.strip()

    def set_credential(self, name: str, value: str) -> None:
        self.sh(
            "install -d -m 0700 /var/lib/nix-infra/credentials && "
            f"systemd-creds encrypt --name={name} - /var/lib/nix-infra/credentials/{name}.cred 2>/dev/null",
            input_text=value,
        )

    def fingerprint(self) -> str:
        """What the drill compares: the rows' count and a digest of them all."""
        return self.sql("SELECT count(*) || ' ' || md5(string_agg(id || ':' || name, ',' ORDER BY id)) FROM items")

    def snapshots(self) -> list[backup.Snapshot]:
        return backup.list_snapshots(self.db, APP)


@pytest.fixture
def drill(tmp_path: Path, example_manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Drill]:
    fleet = FakeFleet(tmp_path / "fleet")
    # the postgres user must reach the data: outside pytest's private temporary directory
    base = Path(tempfile.mkdtemp(prefix="nix-infra-drill-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        _, client_pub = _keypair(tmp_path / "client")
        restic_key, restic_pub = _keypair(tmp_path / "restic")
        hosts = {}
        for name, keys in (("drill-db", [client_pub]), ("drill-repo", [client_pub, restic_pub])):
            priv, pub = _keypair(tmp_path / f"host-{name}")
            server = {"name": name, "public_net": {"ipv4": {"ip": fleet.allocate_ipv4(0)}}}
            user_data = "#cloud-config\n" + json.dumps({"ssh_keys": {"ed25519_private": priv, "ed25519_public": pub}})
            fleet.boot(server, keys, user_data)
            hosts[name] = (server["public_net"]["ipv4"]["ip"], pub)  # type: ignore[index]
        known = tmp_path / "known_hosts"
        known.write_text("".join(f"[{ip}]:{SSH_PORT} {pub}\n" for ip, pub in hosts.values()))
        db = SshTarget(
            node="drill-db", host=hosts["drill-db"][0], port=SSH_PORT, known_hosts=known, identity=tmp_path / "client"
        )
        repo_dir = tmp_path / "restic-repo"
        volume = base / "volume"
        cluster = tmp_path / "cluster"
        cluster.mkdir()
        (cluster / "manifest.json").write_text(json.dumps(example_manifest))
        db_ip, db_pub = hosts["drill-db"]
        FactsStore(cluster / "facts").write(
            NodeFacts(node="worker001", host_key=db_pub, public_ipv4=db_ip, ssh_port=SSH_PORT)
        )
        monkeypatch.chdir(cluster)
        d = Drill(db=db, repo_dir=repo_dir, volume=volume, cluster=cluster)
        pg_bin = PG_BINS[-1].parent
        repo_ip, repo_pub = hosts["drill-repo"]
        # the node side: the credentials the orchestrator delivers, the known_hosts and the
        # wrapper the module writes (the same variables; modules/volumes.nix's backupWrapper)
        d.set_credential("db-backup-repository", f"sftp://root@{repo_ip}:{SSH_PORT}/{repo_dir}")
        d.set_credential("db-backup-password", "correct horse battery staple")
        d.set_credential("db-backup-ssh-key", restic_key)
        wrapper = f"""#!/bin/bash
export PATH={pg_bin}:$PATH
export NIX_INFRA_BACKUP_APP={APP} NIX_INFRA_BACKUP_KIND=postgresql
export NIX_INFRA_BACKUP_PATHS={volume}/backup NIX_INFRA_BACKUP_DUMP_DIR={volume}/backup
export NIX_INFRA_BACKUP_PG_DATABASE=app NIX_INFRA_BACKUP_PG_PORT=5432 NIX_INFRA_BACKUP_UNIT=postgresql.service
export NIX_INFRA_BACKUP_REPOSITORY_SECRET=db-backup-repository NIX_INFRA_BACKUP_PASSWORD_SECRET=db-backup-password
export NIX_INFRA_BACKUP_SSH_KEY_SECRET=db-backup-ssh-key
export NIX_INFRA_BACKUP_SSH_KNOWN_HOSTS=/etc/nix-infra/backup/known_hosts
export RESTIC_CACHE_DIR={base}/cache
exec bash {SCRIPT} "$@"
"""
        d.sh(
            "mkdir -p /etc/nix-infra/backup && cat > /etc/nix-infra/backup/db && chmod 0700 /etc/nix-infra/backup/db",
            input_text=wrapper,
        )
        d.sh("ln -s db /etc/nix-infra/backup/api")  # the CLI's node and app: worker001's api
        d.sh("cat > /etc/nix-infra/backup/known_hosts", input_text=f"[{repo_ip}]:{SSH_PORT} {repo_pub}\n")
        # a real PostgreSQL on the "volume", on a unix socket in the node's own /run
        d.sh(
            f"cd / && install -d -o postgres -m 0700 {volume}/postgresql && "
            "install -d -o postgres -m 0755 /run/postgresql && "
            f"runuser -u postgres -- {pg_bin}/initdb -A peer -D {volume}/postgresql >/dev/null && "
            f"runuser -u postgres -- {pg_bin}/pg_ctl -w -s -D {volume}/postgresql -l /run/postgresql/log "
            "-o \"-c listen_addresses='' -k /run/postgresql -p 5432\" start"
        )
        d.sql("CREATE DATABASE app", database="postgres")
        yield d
    finally:
        fleet.stop_all()  # ends every process of the nodes' namespaces (PostgreSQL, restic)
        shutil.rmtree(base, ignore_errors=True)


def test_drill_backup_destroy_restore(drill: Drill, capfd: pytest.CaptureFixture[str]) -> None:
    d = drill
    d.sql(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);"
        "INSERT INTO items SELECT i, 'item-' || md5(i::text) FROM generate_series(1, 20000) i;"
    )
    before = d.fingerprint()
    size = d.sql("SELECT pg_database_size('app')")

    # through the command line: the manifest's node, its facts, the pinned host key
    t0 = time.monotonic()
    code, out, err = d.cli(capfd, "backup", "run", "worker001", "api")
    backup_s = time.monotonic() - t0
    assert code == 0, err
    assert "snapshot" in out and "saved" in out  # restic's own report, streamed
    assert "worker001: backed up api" in err
    snaps = d.snapshots()
    assert len(snaps) == 1 and f"app={APP}" in snaps[0].tags
    code, out, err = d.cli(capfd, "backup", "list", "worker001", "api")
    assert code == 0, err
    assert out.split()[0] == snaps[0].short_id, (out, err)
    dump = d.volume / "backup" / "app.dump"
    dump_sha = hashlib.sha256(dump.read_bytes()).hexdigest()
    dump_size = dump.stat().st_size

    # the data destroyed: the database and the dump on the volume
    d.sql("DROP DATABASE app", database="postgres")
    shutil.rmtree(d.volume / "backup")
    t0 = time.monotonic()
    code, _, err = d.cli(capfd, "--yes", "backup", "restore", "worker001", "api")
    restore_s = time.monotonic() - t0
    assert code == 0 and "worker001: restored api" in err, err
    after = d.fingerprint()
    assert after == before
    assert after.startswith("20000 ")

    # a restore to another path: the snapshot's files, the app untouched
    other = d.volume.parent / "restored"
    backup.restore(d.db, APP, snapshot=snaps[0].short_id, to=str(other))
    copy = other / str(d.volume / "backup" / "app.dump").lstrip("/")
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == dump_sha
    assert d.fingerprint() == before

    with capfd.disabled():
        print(
            f"\ndrill: database {int(size) // 1024} KiB, dump {dump_size // 1024} KiB, "
            f"backup {backup_s:.1f} s, restore {restore_s:.1f} s, rows compared {after.split()[0]} (digest equal)"
        )


def test_drill_wrong_password_fails_clearly(drill: Drill, capfd: pytest.CaptureFixture[str]) -> None:
    d = drill
    d.sql("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); INSERT INTO items VALUES (1, 'one');")
    backup.run_backup(d.db, APP)
    capfd.readouterr()
    d.set_credential("db-backup-password", "not the password")
    with pytest.raises(NixInfraError, match="backup run db failed"):
        backup.run_backup(d.db, APP)
    assert "the repository's password is wrong (credential db-backup-password)" in capfd.readouterr().err
    with pytest.raises(NixInfraError, match=r"(?s)backup list db failed.*password is wrong"):
        d.snapshots()
    d.set_credential("db-backup-password", "correct horse battery staple")
    assert len(d.snapshots()) == 1  # nothing was initialised over the repository


def test_drill_backup_killed_half_way(drill: Drill) -> None:
    d = drill
    d.sql(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);"
        "INSERT INTO items SELECT i, 'item-' || i FROM generate_series(1, 1000) i;"
    )
    backup.run_backup(d.db, APP)
    first = d.snapshots()
    # ~8 MB that compresses badly, uploaded at 256 KiB/s: the run is killed long before its end
    d.sql(
        "CREATE TABLE blob AS SELECT i, (SELECT string_agg(md5(random()::text || i || j), '') "
        "FROM generate_series(1, 8) j) AS b FROM generate_series(1, 30000) i"
    )
    d.sql("INSERT INTO items SELECT i, 'late-' || i FROM generate_series(1001, 2000) i")
    before = d.fingerprint()
    d.sh(
        "setsid -f bash -c 'echo $$ > /run/drill-pid; "
        "exec env NIX_INFRA_BACKUP_LIMIT_UPLOAD=256 /etc/nix-infra/backup/db run > /run/drill.log 2>&1'"
    )
    deadline = time.monotonic() + 60
    while True:  # until restic uploads (its backup is running), then a little longer
        out = d.sh('ps -o args= --ppid "$(cat /run/drill-pid)" || true').stdout
        if "backup --tag" in out:
            break
        assert time.monotonic() < deadline, d.sh("cat /run/drill.log").stdout
        time.sleep(0.2)
    time.sleep(2)
    d.sh('/bin/kill -KILL -- -"$(cat /run/drill-pid)"')
    deadline = time.monotonic() + 30
    while d.sh('/bin/kill -0 -- -"$(cat /run/drill-pid)" 2>/dev/null', check=False).returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert d.snapshots() == first, "the killed run must not have finished"
    check = d.sh("/etc/nix-infra/backup/db check 2>&1", check=False)
    assert check.returncode == 0, check.stdout
    assert "no errors were found" in check.stdout
    backup.run_backup(d.db, APP)  # the next backup completes
    latest = d.snapshots()
    # retention keeps one snapshot a day (the latest): the new one replaced the first
    assert [s.id for s in latest] != [s.id for s in first] and len(latest) == 1
    d.sql("DROP DATABASE app", database="postgres")
    backup.restore(d.db, APP)
    assert d.fingerprint() == before
