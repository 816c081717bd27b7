"""The secret store, and delivery as systemd credentials on the local fleet (real systemd-creds)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from nix_infra.agestore import load_identity
from nix_infra.delivery import frames
from nix_infra.errors import NixInfraError
from nix_infra.manifest import parse_manifest
from nix_infra.secrets import SecretStore, check_name, missing_secrets

from .conftest import run_cli
from .test_deploy import Cluster, fleet_cluster

# -- the store ------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A repo whose recipients are an age key and an SSH key; returns (repo, age key file, ssh key file)."""
    age_key = tmp_path / "age.txt"
    secret = x25519.Identity.generate()
    age_key.write_text(f"{secret}\n")
    ssh_key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_key)], check=True)
    r = tmp_path / "repo"
    (r / "secrets").mkdir(parents=True)
    (r / "secrets/recipients.txt").write_text(
        f"# ops\n{secret.to_public()}\n{Path(f'{ssh_key}.pub').read_text().strip()} alice@laptop\n"
    )
    return r, age_key, ssh_key


def test_round_trip_with_age_and_ssh_recipients(repo: tuple[Path, Path, Path]) -> None:
    r, age_key, ssh_key = repo
    store = SecretStore(r)
    value = os.urandom(64) + b"\x00binary\n"
    store.set("db-pass", value)
    data = (r / "secrets/db-pass.age").read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n") and value not in data
    assert store.get("db-pass", load_identity(age_key)) == value
    assert store.get("db-pass", load_identity(ssh_key)) == value
    for key in (age_key, ssh_key):  # standard age files: the age tool opens them too
        out = subprocess.run(["age", "-d", "-i", str(key)], input=data, capture_output=True, check=True).stdout
        assert out == value
    assert [i.recipients for i in store.info(None, None)] == [2]


def test_names_are_checked(repo: tuple[Path, Path, Path]) -> None:
    for bad in ("../x", ".hidden", "-x", "a b", "", "x" * 65, "a/b"):
        with pytest.raises(NixInfraError, match="is not allowed; a name is 1-64 characters"):
            check_name(bad)
    assert check_name("tls.key_2-b") == "tls.key_2-b"


def test_rekey_reaches_a_new_recipient_and_a_wrong_identity_is_clear(repo: tuple[Path, Path, Path]) -> None:
    r, age_key, _ = repo
    store = SecretStore(r)
    store.set("a", b"one")
    store.set("b", b"two")
    newcomer = x25519.Identity.generate()
    stranger_file = r.parent / "new.txt"
    stranger_file.write_text(f"{newcomer}\n")
    with pytest.raises(NixInfraError, match="cannot decrypt with identity"):
        store.get("a", load_identity(stranger_file))
    with (r / "secrets/recipients.txt").open("a") as f:
        f.write(f"{newcomer.to_public()}\n")
    assert len(store.rekey(load_identity(age_key))) == 2
    assert store.get("b", load_identity(stranger_file)) == b"two"
    assert {i.recipients for i in store.info(None, None)} == {3}


def test_frames_are_length_prefixed() -> None:
    import hashlib

    empty, xy = hashlib.sha256(b"").hexdigest(), hashlib.sha256(b"x\ny").hexdigest()
    units = {"b": ("b.service", "c.service"), "a": (), "gone": ("x.service",)}
    assert frames({"b": b"x\ny", "a": b""}, units, keep=["pki"]) == (
        f"put a 0 {empty}\nput b 3 {xy}\nx\nyunits b b.service c.service\nkeep a b pki\n".encode()
    )


# -- the CLI on the example manifest --------------------------------------------------------------


@pytest.fixture
def cli_repo(repo: tuple[Path, Path, Path], example_manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    r, age_key, _ = repo
    (r / "manifest.json").write_text(json.dumps(example_manifest))
    monkeypatch.chdir(r)
    monkeypatch.setenv("NIX_INFRA_IDENTITY", str(age_key))
    return r


def test_secret_list_set_rm(cli_repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    m = ["--manifest", "manifest.json"]
    code, out, _ = run_cli(capsys, *m, "secret", "list")
    assert code == 1 and out.split()[:2] == ["api-token", "MISSING"] and "worker001/api" in out
    value_file = tmp_path / "v"
    value_file.write_text("tok-123")
    assert run_cli(capsys, *m, "secret", "set", "api-token", "--from-file", str(value_file))[0] == 0
    code, out, _ = run_cli(capsys, *m, "--json", "secret", "list")
    assert json.loads(out) == [
        {"name": "api-token", "stored": True, "recipients": 2, "decrypts": True, "used_by": ["worker001/api"]}
    ]
    code, _, err = run_cli(capsys, *m, "secret", "set", "../etc", "--from-file", str(value_file))
    assert code == 2 and "is not allowed" in err
    code, _, err = run_cli(capsys, *m, "secret", "rm", "api-token")
    assert code == 1 and "still used by worker001/api" in err
    assert (cli_repo / "secrets/api-token.age").exists()
    assert run_cli(capsys, *m, "secret", "rm", "api-token", "--force")[0] == 0
    assert not (cli_repo / "secrets/api-token.age").exists()


def test_missing_secrets_name_the_nodes(cli_repo: Path, example_manifest: dict[str, Any]) -> None:
    assert missing_secrets(SecretStore(cli_repo), parse_manifest(example_manifest), ["ctrl001", "worker001"]) == {
        "api-token": ["worker001"]
    }


# -- delivery on the fleet ------------------------------------------------------------------------

SPEC = """{
  name = "e2e";
  provider = { location = "fsn1"; sshKeys = [ "%(key)s" ]; adminCidrs = [ "0.0.0.0/0" ]; };
  nodes.ctrl001 = { type = "ctrl"; serverType = "cx22"; };
  nodes.worker001 = { type = "worker"; serverType = "cx22"; };
  nodes.worker002 = { type = "worker"; serverType = "cx22"; };
  apps.api = { group = "backends"; port = 8080; publish = 5001; nodes = [ "worker001" ];
               image = "ghcr.io/acme/api:1"; secrets = [ %(secrets)s ]; };
}
"""
TOKEN = b"tok-7f3a9c1e-never-in-the-clear"
DBPASS = b"db-51b2d8e0-never-in-the-clear"


@pytest.fixture
def secure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    spec = SPEC.replace("%(secrets)s", '"api-token" "db-pass"')
    with fleet_cluster(tmp_path, monkeypatch, spec) as c:
        monkeypatch.setenv("NIX_INFRA_IDENTITY", str(c.key))
        (c.flake / "secrets").mkdir()
        (c.flake / "secrets/recipients.txt").write_text(Path(f"{c.key}.pub").read_text())
        yield c


def creds_dir(c: Cluster, node: str) -> Path:
    return c.server(node).root / "var-lib-nix-infra" / "credentials"


def decrypt(path: Path, name: str) -> bytes:
    return subprocess.run(
        ["systemd-creds", "decrypt", f"--name={name}", str(path), "-"], capture_output=True, check=True
    ).stdout


def store(c: Cluster, name: str, value: bytes) -> None:
    SecretStore(c.flake).set(name, value)


def test_a_missing_secret_or_a_wrong_identity_touches_nothing(
    secure: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    store(secure, "api-token", TOKEN)
    code, _, err = secure.cli(capsys, "deploy")
    assert code == 1
    assert "db-pass: needed by worker001" in err and "nothing was touched" in err
    assert secure.fake.calls == [] and secure.fleet.servers == {}
    store(secure, "db-pass", DBPASS)
    stranger = secure.root / "stranger.txt"
    stranger.write_text(f"{x25519.Identity.generate()}\n")
    code, _, err = secure.cli(capsys, "--identity", str(stranger), "deploy")
    assert code == 1 and "cannot decrypt with identity" in err and "stranger.txt" in err and "Traceback" not in err
    assert secure.fake.calls == [] and secure.fleet.servers == {}


def test_delivery_rotation_and_removal(secure: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    seen: list[bytes] = []
    stop = threading.Event()

    def sample_argv() -> None:  # every process's argv, as often as we can, while deploying
        while not stop.is_set():
            for pid in os.listdir("/proc"):  # not Path.glob: it stats entries, and a process may end meanwhile
                if pid.isdigit():
                    with contextlib.suppress(OSError):  # processes come and go
                        seen.append(Path("/proc", pid, "cmdline").read_bytes())

    sampler = threading.Thread(target=sample_argv)
    sampler.start()
    try:
        code, _, err = secure.cli(capsys, "--debug", "-vv", "deploy")
    finally:
        stop.set()
        sampler.join()
    assert code == 0, err
    assert len(seen) > 100
    assert not any(TOKEN in a or DBPASS in a for a in seen)
    assert TOKEN.decode() not in err and DBPASS.decode() not in err  # nor in the --debug log
    assert any(b"systemd-creds" in a for a in seen)  # the sampler did run during delivery
    # a node that needs no credential and holds none is not even contacted for them
    assert [line for line in err.splitlines() if "credentials:" in line and "worker002" in line] == []
    assert any("credentials:" in line and "worker001" in line for line in err.splitlines())

    d = creds_dir(secure, "worker001")
    assert sorted(p.name for p in d.iterdir()) == ["api-token.cred", "db-pass.cred"]
    assert decrypt(d / "api-token.cred", "api-token") == TOKEN
    assert decrypt(d / "db-pass.cred", "db-pass") == DBPASS
    assert oct(d.stat().st_mode & 0o777) == "0o700" and oct((d / "db-pass.cred").stat().st_mode & 0o777) == "0o600"
    assert not creds_dir(secure, "worker002").exists() or list(creds_dir(secure, "worker002").iterdir()) == []
    for node in ("ctrl001", "worker001", "worker002"):  # nowhere on the nodes' disks or stores
        for path in secure.server(node).root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert TOKEN not in data and DBPASS not in data, path

    restarted = secure.server("worker001").fake_file("restarted")
    # the first delivery came before the system that defines podman-api.service (nothing to
    # restart yet); the switch to that system started it, with its credentials in place
    assert restarted.read_text().splitlines() == ["podman-api.service"]
    calls = secure.server("worker001").fake_file("systemctl.log").read_text().splitlines()
    assert "show --property=LoadState --value -- podman-api.service" in calls
    assert "start -- podman-api.service" in calls and "restart -- podman-api.service" not in calls
    assert (secure.server("worker001").fake_file("units") / "podman-api.service").read_text() == "active\n"

    # rotation: the new value reaches the node at once and restarts exactly the app's unit
    db_mtime = (d / "db-pass.cred").stat().st_mtime_ns
    new_token = tmp_path / "new-token"
    new_token.write_bytes(b"tok-rotated")
    code, out, err = secure.cli(capsys, "secret", "rotate", "api-token", "--from-file", str(new_token), "--deploy")
    assert code == 0, err
    assert "worker001: 1 changed, 1 unchanged, 0 removed; restarted: podman-api.service" in out
    assert decrypt(d / "api-token.cred", "api-token") == b"tok-rotated"
    assert (d / "db-pass.cred").stat().st_mtime_ns == db_mtime  # unchanged: not rewritten
    assert restarted.read_text().splitlines() == ["podman-api.service"] * 2

    # a redeploy with nothing changed rewrites nothing and restarts nothing
    mtimes = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    code, _, err = secure.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert "credentials: 0 changed, 2 unchanged, 0 removed" in err
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == mtimes
    assert restarted.read_text().splitlines() == ["podman-api.service"] * 2

    # the app no longer uses db-pass: its credential is removed from the node
    (secure.flake / "cluster.nix").write_text(
        SPEC.replace("%(secrets)s", '"api-token"') % {"key": Path(f"{secure.key}.pub").read_text().strip()}
    )
    code, _, err = secure.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert "1 removed" in err
    assert sorted(p.name for p in d.iterdir()) == ["api-token.cred"]


def test_action_output_goes_into_the_store_only(secure: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    assert secure.cli(capsys, "deploy")[0] == 0
    actions = secure.server("worker001").root / "etc-nix-infra" / "actions" / "api"
    actions.mkdir(parents=True)
    (actions / "make-token").write_text('#!/bin/sh\nprintf "generated-%s-$ROLE" "$1"\n')
    (actions / "make-token").chmod(0o755)
    (actions / "fail").write_text("#!/bin/sh\necho partial; exit 3\n")
    (actions / "fail").chmod(0o755)

    code, out, err = secure.cli(
        capsys, "action", "worker001", "api", "make-token", "x1", "--env", "ROLE=rw", "--store-as-secret", "made"
    )
    assert code == 0, err
    assert "generated" not in out + err
    assert SecretStore(secure.flake).get("made", load_identity(secure.key)) == b"generated-x1-rw"

    code, _, err = secure.cli(capsys, "action", "worker001", "api", "fail", "--store-as-secret", "made2")
    assert code == 3 and "failed (exit 3); nothing was stored" in err
    assert not (secure.flake / "secrets/made2.age").exists()
    code, _, err = secure.cli(capsys, "action", "worker002", "api", "make-token")
    assert code == 1 and "does not run on worker002" in err


def test_secret_set_from_stdin_and_rotate_reports_units(
    cli_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    m = ["--manifest", "manifest.json"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"from-stdin\x00\xff")))
    assert run_cli(capsys, *m, "secret", "set", "api-token")[0] == 0
    identity = load_identity(Path(os.environ["NIX_INFRA_IDENTITY"]))
    assert SecretStore(cli_repo).get("api-token", identity) == b"from-stdin\x00\xff"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"rotated")))
    code, out, _ = run_cli(capsys, *m, "secret", "rotate", "api-token")
    assert code == 0
    assert "delivers it to worker001 and restarts: worker001: podman-api.service" in out
    assert SecretStore(cli_repo).get("api-token", identity) == b"rotated"


def events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_first_install_starts_the_units_that_failed_for_lack_of_their_credentials(
    secure: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """nixos-anywhere boots the full system before any credential exists: the app's unit fails.
    Delivery must reset and start it, and the node (its system unchanged) must pass the health gate."""
    monkeypatch.setenv("FAKE_INSTALL_SYSTEM", "1")
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    code, out, err = secure.cli(capsys, "--json", "deploy")
    assert code == 0, err
    w = secure.server("worker001")
    assert w.activations() == []  # the installed system was the one to deploy: nothing was switched
    assert (w.fake_file("units") / "podman-api.service").read_text().strip() == "active"
    log = events(out)
    summary = next(e for e in log if e["event"] == "summary")
    assert {n["node"]: n["result"] for n in summary["nodes"]}["worker001"] == "unchanged"
    gated = [e for e in log if e["event"] == "healthy" and e["node"] == "worker001"]
    assert len(gated) == 1 and "podman-api.service" in gated[0]["units"]
    assert "credentials: 2 changed" in next(e for e in log if e["event"] == "credentials")["summary"]
    calls = w.fake_file("systemctl.log").read_text().splitlines()
    assert "reset-failed -- podman-api.service" in calls and "restart -- podman-api.service" in calls
    # nodes delivery did not touch are not gated again (nothing changed there)
    assert not any(e["event"] == "healthy" and e["node"] == "worker002" for e in log)


def override(c: Cluster, worker001: str) -> None:
    """A hand-made manifest: worker001's entry updated with the Nix attrset `worker001`."""
    (c.flake / "manifest-override.nix").write_text(
        f"m: m // {{ nodes = m.nodes // {{ worker001 = m.nodes.worker001 // {worker001}; }}; }}\n"
    )


def test_a_hostile_unit_name_never_reaches_a_node(secure: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    override(secure, '{ credentialUnits = { api-token = [ "-Hroot@example.service" ]; }; }')
    code, _, err = secure.cli(capsys, "deploy")
    assert code == 1
    # refused where the manifest enters (the loader), naming the field
    where = "manifest: nodes.worker001.credentialUnits.api-token[0]"
    assert f"{where}: '-Hroot@example.service' is not a systemd service name" in err
    assert "Traceback" not in err
    assert secure.fake.calls == [] and secure.fleet.servers == {}  # checked before anything was touched


def test_an_app_secret_cannot_take_a_platform_credentials_name(
    secure: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    store(secure, "nix-infra-etcd-client-key", b"app-value")
    override(
        secure,
        '{ credentials = [ "api-token" "db-pass" "nix-infra-etcd-client-key" ]; '
        'credentialUnits = { api-token = [ "podman-api.service" ]; db-pass = [ "podman-api.service" ]; '
        'nix-infra-etcd-client-key = [ "podman-api.service" ]; }; }',
    )
    code, _, err = secure.cli(capsys, "deploy")
    assert code == 1
    # refused where the manifest enters: the name is no secret of the manifest (lib reserves
    # the prefix; test_delivery.py covers delivery's own refusal of a manifest that lists it)
    assert "nodes.worker001.credentials[2]: 'nix-infra-etcd-client-key' is not one of the manifest's secrets" in err
    assert secure.fake.calls == [] and secure.fleet.servers == {}


def test_a_failing_encrypt_on_the_node_is_reported_with_its_reason(
    secure: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    assert secure.cli(capsys, "deploy")[0] == 0
    tool = secure.server("worker001").root / "bin" / "systemd-creds"
    tool.write_text(
        '#!/bin/sh\n[ "$1" = encrypt ] || exec /usr/bin/systemd-creds "$@"\ncat > /dev/null\n'
        'echo "Failed to write credential file: No space left on device" >&2\nexit 1\n'
    )
    tool.chmod(0o755)
    store(secure, "api-token", b"tok-rotated-0d5e")
    code, _, err = secure.cli(capsys, "deploy", "--no-provision")
    assert code == 1
    assert "worker001: delivering credentials failed (exit 2)" in err
    assert "put api-token: systemd-creds encrypt failed: Failed to write credential file: No space left" in err
    assert "tok-rotated" not in err and TOKEN.decode() not in err
    d = creds_dir(secure, "worker001")
    assert decrypt(d / "api-token.cred", "api-token") == TOKEN  # nothing was changed
    assert sorted(p.name for p in d.iterdir()) == ["api-token.cred", "db-pass.cred"]


def test_a_restart_cut_off_is_done_by_the_next_deploy(
    secure: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI dies (here: the node-side session is killed) after the new credentials are in
    place and before their units restart; the next deploy, finding nothing changed, still
    restarts them, and the node goes through the health gate."""
    monkeypatch.setenv("FAKE_INSTALL_SYSTEM", "1")
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    # install the node (its unit fails at boot), then cut the delivery at its first restart
    # call: the first systemctl call after the new credentials are committed, in either version
    code, out, err = secure.cli(capsys, "provision")
    assert code == 0, err
    w = secure.server("worker001")
    real = w.root / "bin" / "systemctl"
    real.rename(w.root / "bin" / "systemctl.real")
    real.write_text(
        '#!/bin/sh\ncase "$1" in reset-failed|restart|try-restart) rm "$0"; mv "$0.real" "$0"; '
        'kill -9 $PPID; exit 1 ;; esac\nexec "$0.real" "$@"\n'
    )
    real.chmod(0o755)
    code, _, err = secure.cli(capsys, "deploy", "--no-provision")
    assert code == 1
    assert decrypt(creds_dir(secure, "worker001") / "api-token.cred", "api-token") == TOKEN  # delivered
    assert (w.fake_file("units") / "podman-api.service").read_text().strip() == "failed"  # not restarted
    code, out, err = secure.cli(capsys, "--json", "deploy", "--no-provision")
    assert code == 0, err
    assert (w.fake_file("units") / "podman-api.service").read_text().strip() == "active"
    log = events(out)
    assert "0 changed, 2 unchanged" in next(e for e in log if e["event"] == "credentials")["summary"]
    assert any(e["event"] == "healthy" and e["node"] == "worker001" for e in log)


def test_no_seed_leaves_the_pki_credentials_alone(secure: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    assert secure.cli(capsys, "deploy")[0] == 0  # --no-seed (this cluster has no control plane)
    d = creds_dir(secure, "worker001")
    # the etcd TLS material an earlier deploy with the PKI step delivered
    for name in ("nix-infra-etcd-ca", "nix-infra-etcd-client-cert", "nix-infra-etcd-client-key"):
        subprocess.run(
            ["systemd-creds", "encrypt", f"--name={name}", "-", str(d / f"{name}.cred")], input=b"pem", check=True
        )
    (secure.flake / "cluster.nix").write_text(
        SPEC.replace("%(secrets)s", '"api-token"') % {"key": Path(f"{secure.key}.pub").read_text().strip()}
    )
    code, _, err = secure.cli(capsys, "deploy", "--no-provision")
    assert code == 0, err
    assert sorted(p.name for p in d.iterdir()) == [
        "api-token.cred",  # db-pass, no longer needed, is removed; what --no-seed skipped stays
        "nix-infra-etcd-ca.cred",
        "nix-infra-etcd-client-cert.cred",
        "nix-infra-etcd-client-key.cred",
    ]


def test_a_unit_that_does_not_come_up_after_delivery_stops_the_deploy(
    secure: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_INSTALL_SYSTEM", "1")
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    assert secure.cli(capsys, "provision")[0] == 0
    w = secure.server("worker001")
    # the installed unit will also load a credential nobody delivers
    w.fake_file("unit-credentials").mkdir()
    (w.fake_file("unit-credentials") / "podman-api.service").write_text("never-delivered\n")
    code, _, err = secure.cli(capsys, "deploy", "--no-provision")
    assert code == 1
    assert "restart FAILED: podman-api.service" in err
    assert "Job for podman-api.service failed" in err  # systemctl's own words
    assert "deploy failed on worker001" in err
    assert "system is degraded" in err or "units not active: podman-api.service" in err
    # rotate --deploy (no health gate) says so too, and fails
    new_token = secure.root / "new-token"
    new_token.write_bytes(b"tok-rotated")
    code, out, err = secure.cli(capsys, "secret", "rotate", "api-token", "--from-file", str(new_token), "--deploy")
    assert code == 1
    assert "worker001: 1 changed, 1 unchanged, 0 removed; restarted: nothing; restart FAILED: podman-api.service" in out
    assert "delivered, but units did not restart on worker001" in err


def test_an_app_secret_with_the_platform_prefix_touches_nothing(
    secure: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    store(secure, "api-token", TOKEN)
    store(secure, "db-pass", DBPASS)
    (secure.flake / "manifest-override.nix").write_text(
        "m: m // { apps = m.apps // { api = m.apps.api // "
        '{ secrets = m.apps.api.secrets ++ [ "nix-infra-cache-key" ]; }; }; }\n'
    )
    code, _, err = secure.cli(capsys, "deploy")
    assert code == 1
    assert "manifest: apps.api.secrets: nix-infra-cache-key: names starting with 'nix-infra-'" in err
    assert secure.fake.calls == [] and secure.fleet.servers == {}
