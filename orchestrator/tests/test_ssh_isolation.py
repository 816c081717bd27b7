"""OpenSSH is isolated from the operator's ssh config, paths with spaces work, the connect
timeout applies (issue 16, part 2), on the local fleet of real sshd nodes.

OpenSSH reads ~/.ssh/config from the home directory in the password database, not $HOME: the
hostile configuration is made the operator's by an `ssh` first on PATH that runs the real one
in a private mount namespace whose /etc/passwd gives root a hostile home. Every OpenSSH the
orchestrator starts (its own, `nix copy`'s, nixos-anywhere's) is that ssh.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nix_infra.errors import NixInfraError
from nix_infra.nix import copy_argv
from nix_infra.ssh import SshTarget, nix_sshopts, ssh_argv, ssh_config_file
from nix_infra.tunnel import forward

from .conftest import run_cli
from .test_deploy import Cluster, fleet_cluster

pytestmark = pytest.mark.skipif(
    shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists(), reason="needs openssh-server"
)

REAL_SSH = shutil.which("ssh") or "/usr/bin/ssh"


def hostile_home(root: Path, variant: str, marker: Path) -> Path:
    """A home whose ~/.ssh/config would forward the agent, trust any host key, and send every
    connection through a proxy that records its use and cannot reach anything."""
    home = root / "hostile-home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    proxy = f"sh -c 'echo proxied %h >> {marker}; exit 1'"
    accept = root / "accept-any-key"
    accept.write_text(f'#!/bin/sh\necho "$1 $2 $3"\necho known-hosts-command >> {marker}\n')
    accept.chmod(0o755)
    (home / ".ssh" / "included").write_text("ForwardX11 yes\nForwardAgent yes\n")
    way = f"ProxyCommand {proxy}" if variant == "proxycommand" else "ProxyJump root@127.0.0.1:1"
    (home / ".ssh" / "config").write_text(
        f"Include {home}/.ssh/included\n"
        "Host *\n"
        f"  {way}\n"
        "  ForwardAgent yes\n"
        f"  KnownHostsCommand {accept} %H %t %K\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
    )
    return home


def install_hostile_ssh(bindir: Path, root: Path) -> Path:
    """`ssh` on PATH whose user (root) has `root/hostile-home` as home in the password database."""
    passwd = root / "passwd"
    lines = Path("/etc/passwd").read_text().splitlines()
    passwd.write_text(
        "".join(
            ":".join([*ln.split(":")[:5], str(root / "hostile-home"), *ln.split(":")[6:]]) + "\n"
            if ln.startswith("root:")
            else ln + "\n"
            for ln in lines
        )
    )
    bindir.mkdir(parents=True, exist_ok=True)
    inner = f'mount --bind {shlex.quote(str(passwd))} /etc/passwd && exec {shlex.quote(REAL_SSH)} "$@"'
    (bindir / "ssh").write_text(
        f'#!/bin/sh\nexec unshare --mount --propagation private sh -c {shlex.quote(inner)} ssh "$@"\n'
    )
    (bindir / "ssh").chmod(0o755)
    return bindir / "ssh"


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cluster, Path, Path]]:
    with fleet_cluster(tmp_path, monkeypatch) as cluster:
        marker = tmp_path / "hostile-used"
        hostile_home(tmp_path, "proxycommand", marker)
        wrapped = install_hostile_ssh(tmp_path / "hostile-bin", tmp_path)
        monkeypatch.setenv("HOME", str(tmp_path / "hostile-home"))  # where paramiko/fabric would look
        monkeypatch.setenv("PATH", f"{wrapped.parent}:{os.environ['PATH']}")
        # the operator's agent, holding the operator's key: ForwardAgent yes would hand it to every node
        sock = tmp_path / "agent.sock"
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert time.monotonic() < deadline, "ssh-agent did not start"
                time.sleep(0.05)
            monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
            subprocess.run(
                ["ssh-add", "-q", str(cluster.key)], check=True, env={**os.environ, "SSH_AUTH_SOCK": str(sock)}
            )
            yield cluster, marker, wrapped
        finally:
            agent.terminate()
            agent.wait()


def plain_ssh(wrapped: Path, cluster: Cluster, node: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """The wrapped ssh with what a careless tool passes: pinned known_hosts but no `-F none`."""
    server = cluster.server(node)
    return subprocess.run(
        [str(wrapped), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-i", str(cluster.key), "-p", "2222",
         *extra, f"root@{server.ip}", "echo agent=${SSH_AUTH_SOCK:-none}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_hostile_ssh_config_changes_nothing(
    hostile: tuple[Cluster, Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cluster, marker, wrapped = hostile
    systems = cluster.deployed(capsys)  # provision, install (nixos-anywhere), nix copy, activate, health
    assert not marker.exists(), marker.read_text()
    # it was the operator's config: an ssh without `-F none` goes through the hostile proxy and fails
    proof = plain_ssh(wrapped, cluster, "worker001")
    assert proof.returncode != 0 and "proxied" in marker.read_text()
    marker.unlink()

    # the agent is not forwarded, whatever ForwardAgent says
    code, out, err = cluster.cli(
        capsys, "cmd", "-t", "ctrl001,svc001,worker001,worker002", "--", "echo", "agent=${SSH_AUTH_SOCK:-none}"
    )
    assert code == 0, err
    answers = sorted(" ".join(line.replace("|", " ").split()) for line in out.splitlines() if "agent=" in line)
    assert answers == sorted(f"{n} agent=none" for n in systems)
    # (the operator's config would have forwarded it)
    forwarded = plain_ssh(wrapped, cluster, "worker001", "-o", "ProxyCommand=none")
    assert forwarded.returncode == 0 and "agent=/" in forwarded.stdout, forwarded.stderr
    assert "known-hosts-command" in marker.read_text()  # and trusted a key through KnownHostsCommand
    marker.unlink()

    # ProxyJump to a bogus host, same outcome: a deploy of a change reaches every node
    hostile_home(tmp_path, "proxyjump", marker)
    proof = plain_ssh(wrapped, cluster, "worker001")
    assert proof.returncode != 0 and "127.0.0.1" in proof.stderr  # the jump host was tried
    systems2 = cluster.deployed(capsys, generation=2)
    assert systems2 != systems
    assert not marker.exists(), marker.read_text()

    # an impostor (a key the facts do not pin) is refused, though KnownHostsCommand accepts anything
    known = cluster.flake / "facts" / "known_hosts"
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    server = cluster.server("worker001")
    shutil.copy(impostor, server.root / "etc" / "host_key")
    shutil.copy(f"{impostor}.pub", server.root / "etc" / "host_key.pub")
    os.kill(int((server.run_dir / "sshd.pid").read_text()), 1)  # sshd reloads its host key
    impostor_key = Path(f"{impostor}.pub").read_text().split()[1]
    deadline = time.monotonic() + 60
    while (
        impostor_key
        not in subprocess.run(
            ["ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", "2222", server.ip],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    ):
        assert time.monotonic() < deadline, "sshd never served the impostor's key"
        time.sleep(0.2)
    # the control: yesterday's options (pinned known_hosts, strict checking, no `-F none`) let the
    # operator's KnownHostsCommand vouch for the impostor
    fooled = plain_ssh(
        wrapped, cluster, "worker001", "-o", "ProxyJump=none", "-o", f"UserKnownHostsFile={known}",
        "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
    )  # fmt: skip
    assert fooled.returncode == 0, fooled.stderr
    assert "known-hosts-command" in marker.read_text()
    marker.unlink()
    before = known.read_text()
    # the session path (fabric): cmd, and a deploy (its probe)
    code, out, err = cluster.cli(capsys, "cmd", "-t", "worker001", "--", "true")
    assert code != 0
    assert "Host key verification failed" in out + err
    code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
    assert code != 0 and "Host key verification failed" in err, err
    # the OpenSSH paths: ssh itself, and nix copy through NIX_SSHOPTS
    target = SshTarget(node="worker001", host=server.ip, port=2222, known_hosts=known, identity=cluster.key)
    refused = subprocess.run(ssh_argv(target, ["true"]), capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr, refused.stderr
    with ssh_config_file(target) as config:
        copied = subprocess.run(
            copy_argv(systems2["worker001"], target),
            env={**os.environ, "NIX_SSHOPTS": nix_sshopts(config)},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert copied.returncode != 0 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in copied.stderr, copied.stderr
    # the etcd tunnel (in process, its own connection)
    with pytest.raises(NixInfraError, match="Host key verification failed"), forward(target, 2379):
        pass
    assert known.read_text() == before  # nothing learnt
    assert not marker.exists(), marker.read_text()


@pytest.fixture
def spaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cluster, Path]]:
    with fleet_cluster(tmp_path, monkeypatch) as cluster:
        yield cluster, tmp_path / "my facts dir" / "facts"


def test_a_facts_path_and_key_with_spaces_work_end_to_end(
    spaced: tuple[Cluster, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cluster, facts = spaced
    key = tmp_path / "my keys" / "operator key"
    key.parent.mkdir()
    shutil.copy(cluster.key, key)
    systems = cluster.systems(1)
    common = ["--flake", str(cluster.flake), "--facts", str(facts), "--ssh-key", str(key), "--ssh-port", "2222"]
    code, _, err = run_cli(capsys, *common, "--yes", "deploy", "--no-seed")
    assert code == 0, err
    assert {n: cluster.server(n).current_system() for n in systems} == systems  # via nix copy, activated
    assert (facts / "known_hosts").read_text().count("nix-infra:") == 4
    code, out, err = run_cli(capsys, *common, "cmd", "-t", "ctrl001,svc001,worker001,worker002", "--", "echo", "ok")
    assert code == 0, err
    assert out.count("| ok") == 4
    systems = cluster.systems(2)
    code, _, err = run_cli(capsys, *common, "--yes", "deploy", "--no-seed")
    assert code == 0, err
    assert {n: cluster.server(n).current_system() for n in systems} == systems


def blackholed(python: str) -> subprocess.CompletedProcess[str]:
    """Run `python` in a new network namespace where 10.254.3.2 swallows every packet: a veth whose
    peer has another MAC address, so a TCP connect there never gets an answer. Nothing leaves it."""
    setup = (
        "ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 10.254.3.1/24 dev v0 && "
        "ip link set v0 up && ip link set v1 up && "
        'ip neigh replace 10.254.3.2 lladdr 02:00:00:00:00:02 dev v0 nud permanent && exec "$@"'
    )
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", setup, "sh", sys.executable, "-c", python],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_connect_timeout_bounds_a_connection_to_a_blackholed_address(tmp_path: Path) -> None:
    # without a timeout, Linux gives up a connect after ~2 minutes of SYN retries
    from nix_infra.facts import generate_host_key

    known = tmp_path / "known_hosts"
    known.write_text(f"10.254.3.2 {generate_host_key().public}\n")
    python = f"""
import time
from pathlib import Path
from nix_infra.process import run
from nix_infra.ssh import SshTarget, run_remote, ssh_argv
t = SshTarget(node="w1", host="10.254.3.2", known_hosts=Path({str(known)!r}), connect_timeout=2)
for way, call in (("session", lambda: run_remote(t, ["true"], check=False)),
                  ("openssh", lambda: run(ssh_argv(t, ["true"]), check=False))):
    start = time.monotonic()
    result = call()
    print(way, result.returncode, time.monotonic() - start, repr(result.stderr.strip()))
"""
    result = blackholed(python)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["session", "255"], ["openssh", "255"]], result.stdout
    for line in lines:
        assert "timed out" in line, line
        assert float(line.split()[2]) < 60, line  # generous: only bounds the ~130 s of an unbounded connect


def test_the_connect_timeout_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example_manifest: dict[str, Any]
) -> None:
    from nix_infra.deploy import SshSettings, ssh_target
    from nix_infra.facts import FactsStore, NodeFacts, generate_host_key
    from nix_infra.manifest import parse_manifest
    from nix_infra.options import Options

    monkeypatch.setenv("NIX_INFRA_SSH_CONNECT_TIMEOUT", "4")
    settings = Options(flake=".", manifest_file=None, json_output=False, yes=True, debug=False).ssh_settings()
    assert settings == SshSettings(connect_timeout=4)
    facts = FactsStore(tmp_path / "facts")
    node = next(iter(parse_manifest(example_manifest).nodes.values()))
    facts.write(NodeFacts(node=node.name, host_key=generate_host_key().public, public_ipv4="192.0.2.9"))
    target = ssh_target(node, facts, settings)
    assert target.connect_timeout == 4
    assert "ConnectTimeout=4" in ssh_argv(target, ["true"])
    monkeypatch.setenv("NIX_INFRA_SSH_CONNECT_TIMEOUT", "4s")
    with pytest.raises(NixInfraError, match="whole number"):
        Options(flake=".", manifest_file=None, json_output=False, yes=True, debug=False).ssh_settings()


def accepted(cluster: Cluster) -> dict[str, int]:
    """Connections each node's sshd accepted so far (it logs one line per authenticated connection)."""
    nodes = ("ctrl001", "svc001", "worker001", "worker002")
    return {n: (cluster.server(n).root / "sshd.log").read_text().count("Accepted publickey") for n in nodes}


def test_a_deploy_opens_one_session_before_the_switch_and_one_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with fleet_cluster(tmp_path, monkeypatch) as cluster:
        cluster.deployed(capsys)
        before = accepted(cluster)
        cluster.deployed(capsys, generation=2)
        after = accepted(cluster)
        change = {n: after[n] - before[n] for n in after}
        # probe, delivery, start: one session; nix copy: its own; confirmation, health: a fresh one
        assert change == dict.fromkeys(after, 3), change
        code, _, err = cluster.cli(capsys, "deploy", "--no-provision")
        assert code == 0, err
        noop = {n: accepted(cluster)[n] - after[n] for n in after}
        with capsys.disabled():
            print(f"\nconnections per node: deploy of a change {change}, no-op deploy {noop}")
        assert all(v <= 2 for v in noop.values()), noop  # the session (probe), and nix copy's if it runs
        # `cmd` and `status`: one connection per node each
        counts = accepted(cluster)
        assert cluster.cli(capsys, "cmd", "-t", ",".join(counts), "--", "true")[0] == 0
        assert cluster.cli(capsys, "status")[0] == 0
        assert {n: accepted(cluster)[n] - counts[n] for n in counts} == dict.fromkeys(counts, 2)


def test_the_session_pins_exactly_the_keys_known_hosts_gives_the_name(tmp_path: Path) -> None:
    from nix_infra.facts import generate_host_key
    from nix_infra.session import pinned_keys

    a, b = (" ".join(generate_host_key().public.split()[:2]) for _ in range(2))
    known = tmp_path / "known_hosts"
    known.write_text(f"10.0.0.1 {a} nix-infra:w1\n[10.0.0.1]:2222 {b}\n@revoked 10.0.0.1 {b}\n10.0.0.10 {b}\n")
    t = SshTarget(node="w1", host="10.0.0.1", known_hosts=known)
    assert pinned_keys(t) == {tuple(a.split())}
    assert pinned_keys(dataclasses.replace(t, port=2222)) == {tuple(b.split())}
    assert pinned_keys(dataclasses.replace(t, host="10.0.0.2")) == set()
    # during an install both the bootstrap and the final key (one type) are pinned
    known.write_text(f"10.0.0.1 {a}\n10.0.0.1 {b}\n")
    assert pinned_keys(t) == {tuple(a.split()), tuple(b.split())}


def test_the_session_reads_no_ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nix_infra.session import PinnedKeys, connection

    marker = tmp_path / "used"
    home = hostile_home(tmp_path, "proxycommand", marker)
    (home / ".ssh" / "config").write_text(
        (home / ".ssh" / "config").read_text() + "  Port 9999\n  User evil\n  HostName 192.0.2.66\n"
    )
    monkeypatch.setenv("HOME", str(home))
    t = SshTarget(node="w1", host="10.0.0.1", port=2222, known_hosts=tmp_path / "known_hosts")
    conn = connection(t)
    assert (conn.host, conn.port, conn.user) == ("10.0.0.1", 2222, "root")
    assert not conn.gateway and conn.forward_agent is False and conn.ssh_config == {"hostname": "10.0.0.1"}
    assert isinstance(conn.client._policy, PinnedKeys) and len(conn.client.get_host_keys()) == 0
