"""Exact command lines and pure logic of the deploy path (no servers needed)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nix_infra.activate import ACTIVATE, WATCH, Activation, current_system_command, probe_command
from nix_infra.deploy import batches
from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore, NodeFacts, generate_host_key
from nix_infra.hetzner.apply import cloud_init_host_key
from nix_infra.manifest import parse_manifest
from nix_infra.nix import build_argv, copied_paths, copy_argv, parse_build_output
from nix_infra.ssh import SshTarget, nix_sshopts, ssh_argv, ssh_config_file, ssh_options
from nix_infra.targets import select

REPO = Path(__file__).resolve().parents[2]


def target(tmp_path: Path, **kw: Any) -> SshTarget:
    return SshTarget(node="w1", host="198.51.100.7", known_hosts=tmp_path / "facts" / "known_hosts", **kw)


def test_ssh_argv_pins_host_keys_and_reads_no_ssh_config(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    argv = ssh_argv(target(tmp_path, identity=key, connect_timeout=7), ["cat", "/etc/os release"])
    assert argv == [
        "ssh",
        "-F", "none",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f'UserKnownHostsFile="{tmp_path}/facts/known_hosts"',
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "KnownHostsCommand=none",
        "-o", "UpdateHostKeys=no",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=7",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-o", "ProxyCommand=none",
        "-o", "ProxyJump=none",
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "ClearAllForwardings=yes",
        "-o", f'IdentityFile="{key}"',
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-p", "22",
        "-T", "root@198.51.100.7",
        "--", "cat '/etc/os release'",
    ]  # fmt: skip


def test_the_agent_is_asked_only_for_a_key_only_it_can_use(tmp_path: Path) -> None:
    plain, locked = tmp_path / "plain", tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(plain)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)], check=True)
    for key, agent in ((plain, False), (locked, True), (Path(f"{plain}.pub"), True)):
        opts = ssh_options(target(tmp_path, identity=key))
        assert ("IdentityAgent=none" not in opts) == agent, key
        assert "IdentitiesOnly=yes" in opts and "ForwardAgent=no" in opts
    # no identity: ssh's default keys and the operator's agent, as before; never forwarded
    opts = ssh_options(target(tmp_path))
    assert "IdentityAgent=none" not in opts and "ForwardAgent=no" in opts and "IdentitiesOnly=yes" not in opts


def test_paths_ssh_would_misread_are_quoted_or_refused(tmp_path: Path) -> None:
    t = SshTarget(node="w1", host="h", known_hosts=Path("/my repo/100%/known_hosts"))
    assert 'UserKnownHostsFile="/my repo/100%%/known_hosts"' in ssh_options(t)
    with pytest.raises(NixInfraError, match="double quote"):
        ssh_options(SshTarget(node="w1", host="h", known_hosts=Path('/a"b/known_hosts')))


def test_nix_gets_a_generated_ssh_config_on_a_path_without_spaces(tmp_path: Path) -> None:
    t = SshTarget(node="w1", host="h", port=2222, known_hosts=tmp_path / "my facts" / "known_hosts")
    with ssh_config_file(t) as config:
        assert not any(c.isspace() for c in str(config))
        assert nix_sshopts(config) == f"-F {config}"
        assert (config.stat().st_mode & 0o777, config.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        text = config.read_text()
        assert f'UserKnownHostsFile "{tmp_path}/my facts/known_hosts"\n' in text
        assert "StrictHostKeyChecking yes\n" in text and "Port 2222\n" in text and "User root\n" in text
        # what ssh itself makes of it
        shown = subprocess.run(
            ["ssh", "-G", "-F", str(config), "h"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert f"userknownhostsfile {tmp_path}/my facts/known_hosts" in shown
        assert {"port 2222", "user root", "forwardagent no", "stricthostkeychecking true", "connecttimeout 10"} <= set(
            shown
        )
    assert not config.parent.exists()
    with pytest.raises(NixInfraError, match="white space"):
        nix_sshopts(Path("/my dir/ssh_config"))


def test_nothing_in_the_code_turns_host_key_checking_off() -> None:
    # as a string literal, i.e. an option the code could pass (docs may name it to warn)
    for path in (REPO / "orchestrator" / "nix_infra").rglob("*.py"):
        text = path.read_text()
        for bad in ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "StrictHostKeyChecking=accept-new"):
            assert f'"{bad}' not in text and f"'{bad}" not in text and f"={bad}" not in text, (path, bad)


def test_build_is_one_invocation_for_every_system() -> None:
    assert build_argv(".", ["nixosConfigurations.a", "nixosConfigurations.b"]) == [
        "nix", "--extra-experimental-features", "nix-command flakes", "build", "--no-link", "--json",
        ".#nixosConfigurations.a.config.system.build.toplevel",
        ".#nixosConfigurations.b.config.system.build.toplevel",
    ]  # fmt: skip
    out = json.dumps(
        [
            {"drvPath": "/nix/store/x.drv", "outputs": {"out": "/nix/store/a"}},
            {"drvPath": "/nix/store/y.drv", "outputs": {"out": "/nix/store/b"}},
        ]
    )
    assert parse_build_output(out, 2) == ["/nix/store/a", "/nix/store/b"]
    with pytest.raises(NixInfraError):
        parse_build_output("[]", 2)


def test_copy_argv(tmp_path: Path) -> None:
    assert copy_argv("/nix/store/abc-sys", target(tmp_path), substitute_on_destination=True) == [
        "nix", "--extra-experimental-features", "nix-command flakes", "copy", "--no-check-sigs",
        "--to", "ssh-ng://root@198.51.100.7", "--substitute-on-destination", "/nix/store/abc-sys",
    ]  # fmt: skip
    stderr = "copying 2 paths...\ncopying path '/nix/store/a-x' to 'ssh-ng://h'...\ncopying path '/nix/store/b-y' to 'ssh-ng://h'...\n"
    assert copied_paths(stderr) == ["/nix/store/a-x", "/nix/store/b-y"]


def test_activation_runs_detached_in_a_transient_unit() -> None:
    act = Activation("w1", "/nix/store/abc-nixos-system", "1700000000-deadbeef", 30)
    assert act.start_command() == [
        "systemd-run",
        "--unit=nix-infra-activate-1700000000-deadbeef",
        "--description=nix-infra activation with magic rollback",
        "--collect",
        "--setenv=PATH=/run/current-system/sw/bin:/usr/bin:/bin",
        "--",
        "/bin/sh", "-c", ACTIVATE, "nix-infra-activate",
        "/nix/store/abc-nixos-system", "1700000000-deadbeef", "30",
    ]  # fmt: skip
    # watching and confirming happen on the node, each in one connection
    assert act.watch_command(("waiting", "failed"), 240) == [
        "/bin/sh", "-c", WATCH, "nix-infra-watch", "0", "/run/nix-infra/1700000000-deadbeef", "240",
        "waiting", "failed",
    ]  # fmt: skip
    assert act.watch_command(("confirmed",), 60, confirm=True)[4:6] == ["1", "/run/nix-infra/1700000000-deadbeef"]
    assert '[ "$confirm" = 1 ] && touch "$base.confirm"' in WATCH
    assert current_system_command() == ["readlink", "-f", "/run/current-system"]
    probe = probe_command("/c")
    assert probe[:2] == ["/bin/sh", "-c"]
    assert probe[2].startswith("readlink -f /run/current-system; ls -1 /c 2>/dev/null || true; ")
    # the script reverts on a failed switch and when no confirmation comes
    assert ACTIVATE.count("revert") >= 3 and "rolled-back" in ACTIVATE


def test_cloud_init_carries_the_host_key() -> None:
    key = generate_host_key()
    text = cloud_init_host_key(key)
    assert text.startswith("#cloud-config\n")
    data = json.loads(text.split("\n", 1)[1])
    assert data["ssh_keys"] == {"ed25519_private": key.private_openssh, "ed25519_public": key.public}
    assert data["ssh_deletekeys"] is True and data["ssh_genkeytypes"] == []


def test_facts_and_known_hosts(tmp_path: Path) -> None:
    store = FactsStore(tmp_path / "facts")
    k1, k2 = generate_host_key(), generate_host_key()
    store.write(NodeFacts("w1", k1.public, "198.51.100.7", "2001:db8::/64"))
    store.write(NodeFacts("w2", k2.public, "198.51.100.8", ssh_port=2222))
    assert store.read("w1") == NodeFacts("w1", k1.public, "198.51.100.7", "2001:db8::/64", 22)
    assert json.loads((tmp_path / "facts" / "w2.json").read_text())["sshPort"] == 2222
    lines = store.known_hosts.read_text().splitlines()
    assert lines == sorted([f"198.51.100.7 {k1.public} nix-infra:w1", f"[198.51.100.8]:2222 {k2.public} nix-infra:w2"])
    k3 = generate_host_key()
    store.pin("w1", ["198.51.100.7"], k3.public)  # a re-install replaces the pin, never adds a second
    assert [line for line in store.known_hosts.read_text().splitlines() if "nix-infra:w1" in line] == [
        f"198.51.100.7 {k3.public} nix-infra:w1"
    ]
    store.forget("w2")
    assert store.read("w2") is None and "nix-infra:w2" not in store.known_hosts.read_text()
    assert "PRIVATE" not in "".join(p.read_text() for p in (tmp_path / "facts").iterdir() if p.is_file())


def test_a_cut_off_facts_write_never_leaves_an_address_without_its_pinned_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the two writes: the key is pinned first, so facts with an address imply a pin."""
    import nix_infra.facts as facts_module

    store = FactsStore(tmp_path / "facts")
    key = generate_host_key().public
    store.write(NodeFacts("w1", key, None))  # written before the server is created
    real = facts_module.write_atomically

    def killed_at_the_json(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.suffix == ".json":
            raise KeyboardInterrupt  # stands for SIGKILL between the writes
        real(path, data, mode)

    monkeypatch.setattr(facts_module, "write_atomically", killed_at_the_json)
    with pytest.raises(KeyboardInterrupt):
        store.write(NodeFacts("w1", key, "198.51.100.7"))
    monkeypatch.undo()
    # the old facts (no address) remain, so the next provision completes them; the pin is already there
    assert store.read("w1") == NodeFacts("w1", key, None)
    done = NodeFacts("w1", key, "198.51.100.7")
    assert store.is_pinned(done)
    store.known_hosts.unlink()  # facts with an address but no pin: repaired by the next provision
    store.write(done)
    assert store.is_pinned(done)


def test_concurrent_pins_lose_nothing(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = FactsStore(tmp_path / "facts")
    keys = {f"n{i}": generate_host_key().public for i in range(24)}
    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(lambda n: store.pin(n, [f"10.0.0.{n[1:]}"], keys[n]), keys))
    lines = store.known_hosts.read_text().splitlines()
    assert sorted(line.split()[-1] for line in lines) == sorted(f"nix-infra:{n}" for n in keys)


def manifest(example_manifest: dict[str, Any]) -> Any:
    data = json.loads(json.dumps(example_manifest))
    base = data["nodes"]["worker001"]
    for i, (name, labels) in enumerate(
        [("worker002", {"tier": "web"}), ("worker003", {}), ("ctrl002", {}), ("ctrl003", {})], start=2
    ):
        kind = "ctrl" if name.startswith("ctrl") else "worker"
        data["nodes"][name] = {
            **base,
            "name": name,
            "system": f"nixosConfigurations.{name}",
            "privateIp": f"10.10.200.{i}",
            "labels": {**base["labels"], **labels, "nix-infra/node": name, "nix-infra/type": kind},
            "type": kind,
        }
    data["waves"] = [["ctrl001"], ["ctrl002"], ["ctrl003"], ["worker001", "worker002", "worker003"]]
    for wave, names in enumerate(data["waves"]):
        for name in names:
            data["nodes"][name]["wave"] = wave
    return parse_manifest(data)


def test_waves_and_batches(example_manifest: dict[str, Any]) -> None:
    m = manifest(example_manifest)
    nodes = list(m.nodes.values())
    assert batches(m, nodes, 2) == [["ctrl001"], ["ctrl002"], ["ctrl003"], ["worker001", "worker002"], ["worker003"]]
    assert batches(m, select(m, ["@worker"]), 10) == [["worker001", "worker002", "worker003"]]


def test_target_selection(example_manifest: dict[str, Any]) -> None:
    m = manifest(example_manifest)
    assert [n.name for n in select(m, ["@ctrl"])] == ["ctrl001", "ctrl002", "ctrl003"]
    assert [n.name for n in select(m, ["worker003,ctrl001", "@tier=web"])] == ["ctrl001", "worker002", "worker003"]
    assert len(select(m, [])) == 6
    for bad, message in [("nope", "no such node"), ("@db", "not a node type"), ("@tier=api", "no node matches")]:
        with pytest.raises(NixInfraError, match=message):
            select(m, [bad])


def test_key_units_follow_the_node_type_mesh_and_apps(example_manifest: dict[str, Any]) -> None:
    from nix_infra.deploy import key_units
    from nix_infra.manifest import parse_manifest

    m = parse_manifest(example_manifest)
    assert key_units(m, m.nodes["ctrl001"]) == ("sshd.service", "etcd.service", "flannel.service")
    assert key_units(m, m.nodes["worker001"]) == (
        "sshd.service",
        "flannel.service",
        "nix-infra-mesh-haproxy.service",
        "nix-infra-confd.service",
        "podman-api.service",
        "nix-infra-register-api.service",
    )


def test_the_health_gate_passes_unit_names_after_double_dash_and_checks_them_first(
    example_manifest: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nix_infra.deploy as deploy_module
    from nix_infra.deploy import Deployer, DeployOptions, SshSettings
    from nix_infra.process import Result

    sent: list[list[str]] = []

    def fake_remote(t: SshTarget, command: list[str], **kw: Any) -> Result:
        sent.append(list(command))
        units = command[4:]
        return Result(tuple(command), 0, "running\n--\n" + "active\n" * len(units), "")

    monkeypatch.setattr(deploy_module, "run_remote", fake_remote)
    m = parse_manifest(example_manifest)
    d = Deployer(m, FactsStore(tmp_path / "facts"), SshSettings(), DeployOptions(flake=".", health_timeout=1))
    assert d.healthy(target(tmp_path), m.nodes["worker001"]) is None
    script, units = sent[0][2], sent[0][4:]
    assert 'systemctl is-active -- "$@"' in script and sent[0][3] == "health"
    assert units[0] == "sshd.service" and units[-1] == "nix-infra-register-api.service"
    # the units a credential delivery restarted are checked as well
    assert d.healthy(target(tmp_path), m.nodes["worker001"], ["podman-extra.service"]) is None
    assert sent[1][4:] == [*units, "podman-extra.service"]
    # a hand-made manifest whose app unit is an option in disguise never gets that far
    data = json.loads(json.dumps(example_manifest))
    data["apps"]["api"]["unit"] = "-Hroot@example.service"
    # the loader refuses it where the manifest enters ...
    with pytest.raises(NixInfraError, match=r"apps\.api\.unit: '-Hroot@example\.service' is not a systemd service"):
        parse_manifest(data)
    # ... and deploy checks again what it sends (defence in depth: its key units come from the raw data)
    bad = dataclasses.replace(m, raw=data)
    sent.clear()
    d = Deployer(bad, FactsStore(tmp_path / "facts"), SshSettings(), DeployOptions(flake=".", health_timeout=1))
    with pytest.raises(NixInfraError, match=r"'-Hroot@example.service' is not a systemd unit name"):
        d.healthy(target(tmp_path), bad.nodes["worker001"])
    with pytest.raises(NixInfraError, match=r"manifest: nodes\.worker001 \(its key units\)"):
        d.run([bad.nodes["worker001"]])
    assert sent == []


def test_delivery_takes_only_unit_names_from_the_nodes_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nix_infra.delivery as delivery_module
    from nix_infra.process import Result

    out = "changed api-token\nrestarted podman-api.service\nrestarted -Hroot@example.service\nrestart-failed x;y\n"
    monkeypatch.setattr(delivery_module, "run_remote_script", lambda t, script, **kw: Result((script,), 0, out, ""))
    node = parse_manifest(json.loads(json.dumps(_manifest_data()))).nodes["worker001"]
    r = delivery_module.deliver(target(tmp_path), node, {"api-token": b"v"})
    assert r.changed == ("api-token",) and r.restarted == ("podman-api.service",) and r.restart_failed == ()
    assert r.touched and r.units == ("podman-api.service",)


def _manifest_data() -> dict[str, Any]:
    from .conftest import example_manifest_data

    return example_manifest_data()


def test_pending_activations_from_the_probe_are_checked() -> None:
    from nix_infra.activate import Pending, parse_pending

    sys_path = "/nix/store/" + "a" * 32 + "-nixos-system-w1-g2"
    lines = [
        f"nix-infra-pending 1700000000-deadbeef waiting {sys_path}",
        f"nix-infra-pending 1700000001-deadbeef switching {sys_path}",
        f"nix-infra-pending ../../etc/x waiting {sys_path}",  # a token that is not one
        "nix-infra-pending 1700000002-deadbeef waiting /etc/passwd",  # not a store path
        f"nix-infra-pending 1700000003-deadbeef confirmed {sys_path}",  # not pending
        f"nix-infra-pending 1700000004-deadbeef waiting {sys_path}; rm -rf /",
        "foo.cred",
    ]
    assert parse_pending(lines) == [
        Pending("1700000000-deadbeef", "waiting", sys_path),
        Pending("1700000001-deadbeef", "switching", sys_path),
    ]


def test_previous_generation_parsing() -> None:
    from nix_infra.deploy import previous_generation

    g1, g2 = "/nix/store/" + "a" * 32 + "-s-g1", "/nix/store/" + "b" * 32 + "-s-g2"
    assert previous_generation(f"running {g2}\nprevious 1 {g1}\n") == (1, g1, g2)
    assert previous_generation(f"running {g2}\n") is None
    assert previous_generation("previous x /nix/store/y\n") is None


def test_stale_secret_dirs_are_removed_live_ones_kept(tmp_path: Path) -> None:
    import fcntl
    import os

    from nix_infra.bootstrap import LOCK_NAME, clean_stale_secret_dirs

    stale, live, other = tmp_path / "nix-infra-stale", tmp_path / "nix-infra-live", tmp_path / "unrelated"
    for d in (stale, live, other):
        (d / "extra-files").mkdir(parents=True)
        (d / LOCK_NAME).write_text("")
    fresh_unlocked = tmp_path / "nix-infra-new"
    (fresh_unlocked / "extra-files").mkdir(parents=True)  # just created, not locked yet: kept
    old_unlocked = tmp_path / "nix-infra-old"
    (old_unlocked / "extra-files").mkdir(parents=True)
    os.utime(old_unlocked, (0, 0))
    with open(live / LOCK_NAME) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        removed = clean_stale_secret_dirs(tmp_path)
    assert sorted(removed) == sorted([stale, old_unlocked])
    assert live.exists() and other.exists() and fresh_unlocked.exists() and not stale.exists()


def test_a_pending_host_key_is_pinned_next_to_the_current_one(tmp_path: Path) -> None:
    store = FactsStore(tmp_path / "facts")
    boot, final = generate_host_key(), generate_host_key()
    store.write(NodeFacts("w1", boot.public, "198.51.100.7", installed=False, pending_host_key=final.public))
    assert store.read("w1") == NodeFacts("w1", boot.public, "198.51.100.7", installed=False,
                                         pending_host_key=final.public)  # fmt: skip
    assert sorted(store.known_hosts.read_text().splitlines()) == sorted(
        [f"198.51.100.7 {boot.public} nix-infra:w1", f"198.51.100.7 {final.public} nix-infra:w1"]
    )
    store.write(NodeFacts("w1", final.public, "198.51.100.7"))
    assert store.known_hosts.read_text().splitlines() == [f"198.51.100.7 {final.public} nix-infra:w1"]
    assert "pendingHostKey" not in json.loads((tmp_path / "facts" / "w1.json").read_text())
    (tmp_path / "facts" / "w1.json").write_text(
        json.dumps({"node": "w1", "hostKey": boot.public, "pendingHostKey": "ssh-ed25519 AAAA\nevil"})
    )
    with pytest.raises(NixInfraError, match="pendingHostKey"):
        store.read("w1")


@pytest.mark.parametrize(
    ("code", "stderr", "expect"),
    [
        (0, "", True),
        (255, "Host key verification failed.\n", False),
        (255, "@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\n", False),
        (255, "root@10.0.0.5: Permission denied (publickey).\n", "Permission denied"),
        (255, "ssh: connect to host 10.0.0.5 port 22: Connection refused\n", "Connection refused"),
    ],
)
def test_a_login_failure_is_never_taken_for_a_changed_host_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, stderr: str, expect: bool | str
) -> None:
    # review finding: any failing `ssh true` read as "neither key answers", with advice to destroy the server
    import nix_infra.bootstrap as bootstrap
    from nix_infra.process import Result

    monkeypatch.setattr(bootstrap, "run_remote", lambda *a, **k: Result(("ssh",), code, "", stderr))
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2"
    if isinstance(expect, bool):
        assert bootstrap.answers_with(target(tmp_path), key, tmp_path) is expect
    else:
        with pytest.raises(NixInfraError, match=rf"cannot tell which host key.*{expect}.*may log in"):
            bootstrap.answers_with(target(tmp_path), key, tmp_path)


def test_the_install_refuses_a_disk_that_is_a_hetzner_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # review finding: a re-created stateful node has its volume attached before nixos-anywhere,
    # and disko formats /dev/sda whatever it is
    import nix_infra.bootstrap as bootstrap
    from nix_infra.process import Result

    sent: list[list[str]] = []

    def remote(t: SshTarget, command: list[str], **kw: Any) -> Result:
        sent.append(command)
        return Result(tuple(command), 3, "/dev/disk/by-id/scsi-0HC_Volume_100123\n", "")

    monkeypatch.setattr(bootstrap, "run_remote", remote)
    with pytest.raises(
        NixInfraError, match=r"/dev/sda is the Hetzner volume .*scsi-0HC_Volume_100123.*nothing was written"
    ):
        bootstrap.check_install_disk("db001", target(tmp_path))
    assert sent[0][:2] == ["/bin/sh", "-c"] and "scsi-0HC_Volume_" in sent[0][2]
    monkeypatch.setattr(bootstrap, "run_remote", lambda *a, **k: Result(("sh",), 0, "", ""))
    bootstrap.check_install_disk("db001", target(tmp_path))  # the server's own disk: on we go
