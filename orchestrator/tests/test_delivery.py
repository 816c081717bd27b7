"""The node-side delivery script run here (real systemd-creds, a stand-in systemctl), and the
names delivery checks before anything reaches a node."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nix_infra.delivery import (
    DELIVER_SCRIPT,
    check_credential_names,
    check_node_names,
    check_unit_name,
    credential_units,
    frames,
    node_values,
    pki_credential_units,
)
from nix_infra.errors import NixInfraError
from nix_infra.manifest import Node, PortSet, parse_manifest

needs_creds = pytest.mark.skipif(shutil.which("systemd-creds") is None, reason="needs systemd-creds")

# records every call and keeps per-unit states in $FAKE/units: enough to see what the script asks
SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$FAKE/calls"
case "$1" in
  show) for u; do :; done; if [ -e "$FAKE/units/$u" ]; then echo loaded; else echo not-found; fi ;;
  reset-failed) ;;
  restart) shift; [ "$1" = -- ] && shift; for u; do echo active > "$FAKE/units/$u"; done ;;
  is-active) exit 0 ;;
  *) exit 1 ;;
esac
"""


def node(**kw: object) -> Node:
    ports = PortSet((), ())
    base: dict[str, object] = dict(
        name="w1", type="worker", location="fsn1", server_type="cx22", image="debian-12",
        private_ip="10.0.0.2", labels={}, system="nixosConfigurations.w1", credentials=("api-token",),
        credential_units={"api-token": ("podman-api.service",)}, wave=1, consumes=("backends",),
        apps=("api",), public_ports=ports, private_ports=ports,
    )  # fmt: skip
    base.update(kw)
    return Node(**base)  # type: ignore[arg-type]


class NodeSide:
    """The delivery script with a credentials directory and a stand-in systemctl of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "credentials"
        (root / "bin").mkdir(parents=True)
        (root / "units").mkdir()
        (root / "bin" / "systemctl").write_text(SYSTEMCTL)
        (root / "bin" / "systemctl").chmod(0o755)

    def run(self, stream: bytes) -> subprocess.CompletedProcess[bytes]:
        env = {"PATH": f"{self.root / 'bin'}:/usr/bin:/bin", "FAKE": str(self.root)}
        return subprocess.run(
            ["bash", "--norc", "-c", DELIVER_SCRIPT, "deliver-credentials", str(self.dir)],
            input=stream,
            capture_output=True,
            env=env,
            check=False,
        )

    def value(self, name: str) -> bytes:
        return subprocess.run(
            ["systemd-creds", "decrypt", f"--name={name}", str(self.dir / f"{name}.cred"), "-"],
            capture_output=True,
            check=True,
        ).stdout

    def files(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir())

    def calls(self) -> list[str]:
        path = self.root / "calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def side(tmp_path: Path) -> NodeSide:
    return NodeSide(tmp_path)


@needs_creds
def test_a_cut_stream_commits_nothing(side: NodeSide) -> None:
    assert side.run(frames({"a": b"old-a", "b": b"old-b"})).returncode == 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in side.dir.iterdir()}
    whole = frames({"a": b"new-a", "b": b"new-b-0123456789"})
    # cut inside b's value, and cut right after the last value (the keep line never came)
    for cut in (whole[: whole.index(b"new-b") + 4], whole[: whole.index(b"keep")]):
        r = side.run(cut)
        assert r.returncode == 2
        assert side.files() == ["a.cred", "b.cred"]  # no staged file left behind
        assert (side.value("a"), side.value("b")) == (b"old-a", b"old-b")
        assert {p.name: p.stat().st_mtime_ns for p in side.dir.iterdir()} == mtimes
        assert b"nothing was changed" in r.stderr and b"new-" not in r.stderr
    assert b"4 of 16 bytes arrived" in side.run(whole[: whole.index(b"new-b") + 4]).stderr


@needs_creds
def test_a_value_that_does_not_match_its_checksum_commits_nothing(side: NodeSide) -> None:
    assert side.run(frames({"a": b"old-a"})).returncode == 0
    forged = frames({"a": b"new-a"}).replace(hashlib.sha256(b"new-a").hexdigest().encode(), b"0" * 64)
    r = side.run(forged)
    assert r.returncode == 2 and b"checksum mismatch" in r.stderr
    assert side.value("a") == b"old-a" and side.files() == ["a.cred"]


@needs_creds
def test_a_bad_unit_name_is_refused_on_the_node_too(side: NodeSide) -> None:
    r = side.run(b"put a 1\nxunits a -Hroot@example.service\nkeep a\n")
    assert r.returncode == 2 and b"not a unit name" in r.stderr
    assert not side.dir.exists() or side.files() == []
    assert side.calls() == []


@needs_creds
def test_changed_credentials_reset_and_restart_their_loaded_units(side: NodeSide) -> None:
    (side.root / "units" / "podman-api.service").write_text("failed\n")  # failed at boot, no credential
    units = {"api-token": ["podman-api.service"], "db": ["podman-api.service", "podman-new.service"]}
    r = side.run(frames({"api-token": b"t", "db": b"d"}, units))
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().splitlines()
    assert out == [
        "changed api-token",
        "changed db",
        "not-loaded podman-new.service",  # the coming switch brings it, and starts it
        "restarted podman-api.service",
    ]
    assert side.calls()[-2:] == ["reset-failed -- podman-api.service", "restart -- podman-api.service"]
    assert (side.root / "units" / "podman-api.service").read_text().strip() == "active"
    assert not (side.dir / ".pending-restart").exists()
    # unchanged values restart nothing
    before = len(side.calls())
    assert side.run(frames({"api-token": b"t", "db": b"d"}, units)).stdout.decode().split() == [
        "unchanged", "api-token", "unchanged", "db",
    ]  # fmt: skip
    assert len(side.calls()) == before


@needs_creds
def test_a_restart_cut_off_is_done_by_the_next_delivery(side: NodeSide) -> None:
    (side.root / "units" / "podman-api.service").write_text("failed\n")
    kill = side.root / "bin" / "systemctl"
    kill.write_text('#!/bin/sh\necho "$*" >> "$FAKE/calls"\n[ "$1" = show ] && echo loaded && exit 0\nkill -9 $PPID\n')
    units = {"api-token": ["podman-api.service"]}
    assert side.run(frames({"api-token": b"t"}, units)).returncode != 0  # killed at the restart
    assert side.value("api-token") == b"t"  # committed
    assert (side.dir / ".pending-restart").read_text() == "podman-api.service\n"
    kill.write_text(SYSTEMCTL)
    r = side.run(frames({"api-token": b"t"}, units))
    assert r.stdout.decode().splitlines() == ["unchanged api-token", "restarted podman-api.service"]
    assert not (side.dir / ".pending-restart").exists()


@needs_creds
def test_keep_leaves_credentials_that_were_not_sent(side: NodeSide) -> None:
    assert side.run(frames({"app": b"v", "nix-infra-etcd-ca": b"ca", "old": b"o"})).returncode == 0
    r = side.run(frames({"app": b"v"}, keep=["nix-infra-etcd-ca"]))
    assert r.stdout.decode().splitlines() == ["unchanged app", "removed old"]
    assert side.files() == ["app.cred", "nix-infra-etcd-ca.cred"]


def test_encrypt_failures_carry_the_tools_message_and_never_the_value(side: NodeSide) -> None:
    creds = side.root / "bin" / "systemd-creds"
    creds.write_text(
        '#!/bin/sh\ncat > /dev/null\necho "Failed to open host key: No space left on device" >&2\nexit 1\n'
    )
    creds.chmod(0o755)
    r = side.run(frames({"api-token": b"s3cret-value"}))
    assert r.returncode == 2
    assert b"put api-token: systemd-creds encrypt failed: Failed to open host key: No space left" in r.stderr
    assert b"s3cret" not in r.stderr + r.stdout


# -- names ----------------------------------------------------------------------------------------


def test_unit_names_follow_systemds_grammar() -> None:
    for good in ("podman-api.service", "nix-infra-register-api.service", "a@b.service", "x\\x2dy.mount", "a:b.timer"):
        assert check_unit_name(good, "here") == good
    for bad in (
        "-Hroot@example.service",
        "--host=evil.service",
        "api",
        "a b.service",
        "a;b.service",
        "a.service\n",
        "x" * 250 + ".service",
        "a.servicex",
        "",
    ):
        with pytest.raises(NixInfraError, match=r"^here: .* is not a systemd unit name"):
            check_unit_name(bad, "here")


def test_credential_units_are_checked_where_they_come_from() -> None:
    n = node(credential_units={"api-token": ("-Hroot@example.service",)})
    with pytest.raises(NixInfraError, match=r"manifest: nodes\.w1\.credentialUnits\.api-token: '-Hroot"):
        credential_units(n)


def test_platform_credentials_are_loaded_by_the_units_the_modules_wire() -> None:
    assert pki_credential_units(node())["nix-infra-etcd-client-key"] == (
        "flannel.service",
        "nix-infra-confd.service",
        "nix-infra-register-api.service",
    )
    ctrl = pki_credential_units(node(type="ctrl", consumes=(), apps=()))
    assert ctrl["nix-infra-etcd-ca"] == ("etcd.service", "flannel.service")
    assert ctrl["nix-infra-etcd-peer-key"] == ("etcd.service",)
    assert credential_units(node())["api-token"] == ("podman-api.service",)


def test_an_app_secret_named_like_platform_material_is_refused() -> None:
    n = node(
        credentials=("api-token", "nix-infra-etcd-client-key"),
        credential_units={"api-token": ("podman-api.service",), "nix-infra-etcd-client-key": ("podman-api.service",)},
    )
    with pytest.raises(NixInfraError, match=r"nodes\.w1\.credentials: nix-infra-etcd-client-key is a platform"):
        check_credential_names(n)
    with pytest.raises(NixInfraError, match="reserved, rename the app secret"):
        node_values(n, lambda name: b"app value", {"nix-infra-etcd-client-key": b"pki key"})
    # the cache key of a registry node is platform material the manifest lists: allowed
    check_credential_names(node(credentials=("nix-infra-cache-key",)))


@needs_creds
def test_files_staged_by_a_killed_delivery_are_never_committed(side: NodeSide) -> None:
    assert side.run(frames({"a": b"old-a"})).returncode == 0
    subprocess.run(  # what a delivery killed outright (SIGKILL, no exit trap) leaves behind
        ["systemd-creds", "encrypt", "--name=b", "-", str(side.dir / ".b.cred.new")], input=b"half", check=True
    )
    assert side.run(frames({"a": b"old-a"})).stdout.decode().splitlines() == ["unchanged a"]
    assert side.files() == ["a.cred"] and side.value("a") == b"old-a"


def test_an_app_secret_with_the_platform_prefix_is_refused(example_manifest: dict[str, Any]) -> None:
    """On a registry node lib's credentialUnits keep only nix-serve for the cache key, so an app
    secret of that name would hand the app the cache's signing key without a trace there."""
    data = json.loads(json.dumps(example_manifest))
    data["apps"]["api"]["secrets"] = ["api-token", "nix-infra-cache-key"]
    m = parse_manifest(data)
    with pytest.raises(NixInfraError, match=r"manifest: apps\.api\.secrets: nix-infra-cache-key: names starting"):
        check_node_names(m.nodes["worker001"], m)
    check_node_names(parse_manifest(example_manifest).nodes["worker001"], parse_manifest(example_manifest))
