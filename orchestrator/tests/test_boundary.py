"""Boundary validation (issue 12): every value is checked where it enters, against every place
it ends up; user errors are messages naming the field or option, never tracebacks."""

from __future__ import annotations

import copy
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
from hcloud import Client
from hcloud.images import Image
from hcloud.placement_groups import PlacementGroup
from hcloud.server_types import ServerType
from pyrage import x25519

from nix_infra.agestore import load_identity, write_encrypted
from nix_infra.errors import NixInfraError
from nix_infra.fake_hcloud import FakeHcloud
from nix_infra.manifest import load_manifest_file, parse_manifest
from nix_infra.options import Options
from nix_infra.pki import Pki
from nix_infra.secrets import SecretStore

from .conftest import REPO, run_cli

# systemd's CREDENTIAL_SIZE_MAX and CREDENTIALS_TOTAL_SIZE_MAX (src/shared/creds-util.h)
CREDENTIAL_SIZE_MAX = 1024 * 1024
SCHEMA = json.loads((REPO / "docs" / "manifest.schema.json").read_text())


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """run_cli, and no traceback ever: an exception escaping main() fails the test."""
    code, out, err = run_cli(capsys, *args)
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture
def repo(tmp_path: Path, example_manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cluster repo (the working directory) with an age recipient, its identity and the example manifest."""
    identity = x25519.Identity.generate()
    key = tmp_path / "age.txt"
    key.write_text(f"{identity}\n")
    r = tmp_path / "repo"
    (r / "secrets").mkdir(parents=True)
    (r / "secrets/recipients.txt").write_text(f"{identity.to_public()}\n")
    (r / "manifest.json").write_text(json.dumps(example_manifest))
    monkeypatch.chdir(r)
    monkeypatch.setenv("NIX_INFRA_IDENTITY", str(key))
    return r


def stored(r: Path, name: str) -> bytes:
    import os

    return SecretStore(r).get(name, load_identity(Path(os.environ["NIX_INFRA_IDENTITY"])))


def set_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))


M = ["--manifest", "manifest.json"]


# ---- case 6: every pattern check is a full match ------------------------------------------------


def test_a_secret_name_with_a_final_newline_is_refused(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    set_stdin(monkeypatch, b"value")
    code, _, err = cli(capsys, *M, "secret", "set", "foo\n")
    assert code == 2 and "NAME" in err and "is not allowed" in err
    assert sorted(p.name for p in (repo / "secrets").iterdir()) == ["recipients.txt"]


def test_the_fake_api_refuses_a_label_key_with_a_final_newline(client: Client) -> None:
    from hcloud import APIException

    with pytest.raises(APIException) as exc:
        client.placement_groups.create(name="g", type="spread", labels={"team\n": "a"})
    assert exc.value.code == "invalid_input"


def test_no_pattern_is_checked_with_match_or_search() -> None:
    """Validation uses fullmatch: `re.match("^...$")` and `.search` let a final newline through."""
    offenders = []
    for path in sorted((REPO / "orchestrator" / "nix_infra").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(re|_[A-Z_]+|[A-Z_]{3,})\.(match|search)\(", line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


# ---- case 7: the manifest is validated where it enters ------------------------------------------


def escaped_manifest(example: dict[str, Any]) -> dict[str, Any]:
    m = copy.deepcopy(example)
    bad = "../../../escaped-node"
    m["nodes"][bad] = {**m["nodes"].pop("ctrl001"), "name": bad}
    m["waves"][0] = [bad]
    m["etcd"]["members"] = [bad]
    return m


def test_a_manifest_node_named_like_a_path_writes_nothing_outside_the_repo(
    repo: Path, capsys: pytest.CaptureFixture[str], example_manifest: dict[str, Any], tmp_path: Path
) -> None:
    assert cli(capsys, *M, "init", "--cluster", "demo")[0] == 0
    (repo / "manifest.json").write_text(json.dumps(escaped_manifest(example_manifest)))
    code, _, err = cli(capsys, *M, "pki", "issue")
    assert code == 1
    assert "manifest: nodes: the key '../../../escaped-node' is not a DNS label" in err
    assert not list(tmp_path.rglob("escaped-node"))
    assert not (repo / "pki/nodes").exists()


def _vol(**kw: Any) -> dict[str, Any]:
    return {"size": 10, "mountpoint": "/srv/data", "filesystem": "ext4", "labels": {}} | kw


BAD_MANIFESTS = {
    "node name with a slash": lambda m: m["nodes"].update({"a/b": m["nodes"]["worker001"]}),
    "node name with a final newline": lambda m: m["nodes"].update({"w\n": m["nodes"]["worker001"]}),
    "cluster name with a final newline": lambda m: m.update(cluster="demo\n"),
    "cluster name too long": lambda m: m.update(cluster="a" * 64),
    "app name uppercase": lambda m: m["apps"].update({"API": m["apps"]["api"]}),
    "secret name with ..": lambda m: m.update(secrets=["../x"]),
    "secret name leading -": lambda m: m.update(secrets=["-x"]),
    "credentials not strings": lambda m: m["nodes"]["worker001"].update(credentials=[1, 2]),
    "unit with a newline": lambda m: m["apps"]["api"].update(unit="a.service\nExecStart=/bin/sh"),
    "unit with a leading -": lambda m: m["apps"]["api"].update(unit="-a.service"),
    "unit with a space": lambda m: m["apps"]["api"].update(unit="a b.service"),
    "unit too long": lambda m: m["apps"]["api"].update(unit="a" * 250 + ".service"),
    "credential unit with a slash": lambda m: m["nodes"]["worker001"].update(
        credentialUnits={"api-token": ["../x.service"]}
    ),
    "private ip with leading zero": lambda m: m["nodes"]["worker001"].update(privateIp="10.10.064.1"),
    "private ip out of range": lambda m: m["nodes"]["worker001"].update(privateIp="10.10.0.300"),
    "private ip with a final newline": lambda m: m["nodes"]["worker001"].update(privateIp="10.10.64.1\n"),
    "gateway not an address": lambda m: m["network"].update(gateway="gw"),
    "ip range prefix 33": lambda m: m["network"].update(ipRange="10.10.0.0/33"),
    "port 0": lambda m: m["apps"]["api"].update(port=0),
    "port 65536": lambda m: m["nodes"]["worker001"]["firewall"]["public"].update(tcp=[65536]),
    "port as a string": lambda m: m["apps"]["api"].update(publish="5001"),
    "etcd client port too big": lambda m: m["etcd"].update(clientPort=70000),
    "label value with a space": lambda m: m["nodes"]["worker001"]["labels"].update(team="a b"),
    "label key with a newline": lambda m: m["nodes"]["worker001"]["labels"].update({"t\n": "a"}),
    "label value too long": lambda m: m["nodes"]["worker001"]["labels"].update(team="a" * 64),
    "ssh key with a second line": lambda m: m.update(sshKeys=[m["sshKeys"][0] + "\nssh-ed25519 AAAA evil"]),
    "admin cidr garbage": lambda m: m.update(adminCidrs=["everyone/0"]),
    "endpoint with a path": lambda m: m["etcd"].update(endpoints=["https://10.10.32.1:2379/x"]),
    "seeded instance key": lambda m: m["etcdSeed"].update({"/cluster/backends/api/instances/w1": {}}),
    "seed key with ..": lambda m: m["etcdSeed"].update({"/cluster/nodes/../x": {}}),
    "system attribute injection": lambda m: m["nodes"]["worker001"].update(system="nixosConfigurations.x --impure"),
    "server type with a space": lambda m: m["nodes"]["worker001"].update(serverType="cx22 x"),
    "image with a newline": lambda m: m["nodes"]["worker001"].update(image="debian-12\nx"),
    "app path with a newline": lambda m: m["apps"]["api"].update(path="/\nbackend evil"),
    "health path with a space": lambda m: m["apps"]["api"]["healthCheck"].update(path="/a b"),
    "env prefix lowercase": lambda m: m["apps"]["api"].update(envPrefix="api"),
    "unknown node field": lambda m: m["nodes"]["worker001"].update(extra=1),
    "unknown top field": lambda m: m.update(extra=1),
    "wave as a string": lambda m: m["nodes"]["worker001"].update(wave="1"),
    "boolean as a port": lambda m: m["apps"]["api"].update(port=True),
    "version as a boolean": lambda m: m.update(version=True),
    "duplicate secret": lambda m: m.update(secrets=["api-token", "api-token"]),
    "empty nodes": lambda m: m.update(nodes={}),
    "labels not an object": lambda m: m["nodes"]["worker001"].update(labels=[]),
    "volume too small": lambda m: m["nodes"]["worker001"].update(volumes={"d": _vol(size=9)}),
    "volume too large": lambda m: m["nodes"]["worker001"].update(volumes={"d": _vol(size=10241)}),
    "volume mounted at /": lambda m: m["nodes"]["worker001"].update(volumes={"d": _vol(mountpoint="/")}),
    "volume under /nix": lambda m: m["nodes"]["worker001"].update(volumes={"d": _vol(mountpoint="/nix/store")}),
    "volume at /etc": lambda m: m["nodes"]["worker001"].update(volumes={"d": _vol(mountpoint="/etc")}),
    "volume with ..": lambda m: m["nodes"]["worker001"].update(volumes={"d": _vol(mountpoint="/srv/../etc")}),
    "volume mountpoint with a newline": lambda m: m["nodes"]["worker001"].update(
        volumes={"d": _vol(mountpoint="/srv\n")}
    ),
    "volume filesystem btrfs": lambda m: m["nodes"]["worker001"].update(volumes={"d": _vol(filesystem="btrfs")}),
    "volume name uppercase": lambda m: m["nodes"]["worker001"].update(volumes={"D": _vol()}),
    "volume unknown field": lambda m: m["nodes"]["worker001"].update(volumes={"d": {**_vol(), "id": 1}}),
    "stateful as a string": lambda m: m["nodes"]["worker001"].update(stateful="yes"),
    "app volume not a label": lambda m: m["apps"]["api"].update(volume="../d"),
}


def ecma_validator() -> jsonschema.protocols.Validator:
    """The schema with ECMA-262 pattern semantics (what JSON Schema specifies): `$` is the end of
    the string. Python's jsonschema uses re.search, whose `$` also matches before a final newline."""

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        if isinstance(instance, str) and not re.search(re.sub(r"\$$", r"\\Z", patrn), instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    def property_names(validator: Any, names: Any, instance: Any, schema: Any) -> Any:
        if isinstance(instance, dict):
            for key in instance:
                yield from validator.descend(instance=key, schema=names)

    cls = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"pattern": pattern, "propertyNames": property_names}
    )
    return cls(SCHEMA)


@pytest.mark.parametrize("name", sorted(BAD_MANIFESTS))
def test_the_schema_and_the_loader_refuse_the_same_bad_manifests(example_manifest: dict[str, Any], name: str) -> None:
    m = copy.deepcopy(example_manifest)
    BAD_MANIFESTS[name](m)
    assert list(ecma_validator().iter_errors(m)), f"the schema accepts: {name}"
    with pytest.raises(NixInfraError, match=r"^manifest: "):
        parse_manifest(m)


def test_good_manifests_pass_the_schema_and_the_loader(example_manifest: dict[str, Any]) -> None:
    from .conftest import example_manifest_data

    for data in (
        example_manifest,
        example_manifest_data("import ./templates/cluster/cluster.nix"),
        example_manifest_data("import ./bench/cluster.nix { size = 100; }"),
    ):
        assert not list(ecma_validator().iter_errors(data))
        assert parse_manifest(data).cluster


def test_the_loader_checks_references_the_schema_cannot(example_manifest: dict[str, Any]) -> None:
    cases = [
        (lambda m: m["apps"]["api"].update(nodes=["ghost"]), r"apps\.api\.nodes\[0\]: 'ghost' is not one of"),
        (lambda m: m["nodes"]["worker001"].update(apps=["ghost"]), r"nodes\.worker001\.apps\[0\]"),
        (lambda m: m["etcd"].update(members=["ghost"]), r"etcd\.members\[0\]"),
        (lambda m: m.update(waves=[["ctrl001"]]), r"node worker001 is listed 0 times"),
        (lambda m: m["nodes"]["worker001"].update(name="other"), r"nodes\.worker001\.name"),
        (lambda m: m.update(secrets=[]), r"nodes\.worker001\.credentials\[0\]: 'api-token' is not one of"),
        (lambda m: m["network"].update(ipRange="10.10.0.1/16"), r"network\.ipRange: .* without host bits"),
        (
            lambda m: m["apps"]["api"].update(volume="data"),
            r"apps\.api\.volume: 'data' is not a volume of node worker001",
        ),
        (
            lambda m: m["nodes"]["worker001"].update(volumes={"d": _vol()}, stateful=False),
            r"nodes\.worker001\.stateful: is false, but the node has volumes",
        ),
        (
            lambda m: m["nodes"]["worker001"].update(volumes={"a": _vol(), "b": _vol()}, stateful=True),
            r"nodes\.worker001\.volumes\.a\.mountpoint: '/srv/data' is not a mountpoint of this volume alone",
        ),
    ]
    for mutate, message in cases:
        m = copy.deepcopy(example_manifest)
        mutate(m)
        with pytest.raises(NixInfraError, match=message):
            parse_manifest(m)


# ---- case 9: a placement group's limit counts everyone's servers --------------------------------


def test_a_group_holding_foreign_servers_is_not_overfilled(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    fake: FakeHcloud,
    client: Client,
) -> None:
    group = client.placement_groups.create(
        name="demo-spread-1", type="spread", labels={"nix-infra/cluster": "demo"}
    ).placement_group
    for i in range(9):  # someone else's servers, in our group
        client.servers.create(
            name=f"other-{i}",
            server_type=ServerType(name="cx22"),
            image=Image(name="debian-12"),
            placement_group=PlacementGroup(id=group.id),
        )
    code, out, _ = cli(capsys, "--manifest", str(manifest_file), "--json", "plan")
    assert code == 2
    servers = {c["name"]: c["fields"]["placement_group"] for c in json.loads(out)["changes"] if c["kind"] == "server"}
    assert sorted(servers.values()) == ["demo-spread-1", "demo-spread-2"]  # one place left in spread-1
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")
    assert code == 0, err
    sizes = {g["name"]: len(g["servers"]) for g in fake.snapshot()["placement_groups"]}
    assert sizes == {"demo-spread-1": 10, "demo-spread-2": 1}


def test_a_group_with_only_foreign_servers_is_not_deleted(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    fake: FakeHcloud,
    client: Client,
) -> None:
    assert cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")[0] == 0
    extra = client.placement_groups.create(
        name="demo-spread-5", type="spread", labels={"nix-infra/cluster": "demo"}
    ).placement_group
    client.servers.create(
        name="other-0",
        server_type=ServerType(name="cx22"),
        image=Image(name="debian-12"),
        placement_group=PlacementGroup(id=extra.id),
    )
    code, out, _ = cli(capsys, "--manifest", str(manifest_file), "--json", "plan")
    assert code == 0, out  # nothing to delete: the group holds a server, even if not ours


# ---- case 10: the credential size limit, when stored and before deploy --------------------------


def test_a_value_over_the_credential_limit_is_not_stored(
    repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (CREDENTIAL_SIZE_MAX + 1))
    code, _, err = cli(capsys, *M, "secret", "set", "api-token", "--from-file", str(big))
    assert code == 1 and "1048576 bytes" in err
    assert not (repo / "secrets/api-token.age").exists()
    big.write_bytes(b"x" * CREDENTIAL_SIZE_MAX)  # exactly the limit is fine
    assert cli(capsys, *M, "secret", "set", "api-token", "--from-file", str(big))[0] == 0
    assert len(stored(repo, "api-token")) == CREDENTIAL_SIZE_MAX


def test_a_huge_stdin_is_refused_without_reading_it_all(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    set_stdin(monkeypatch, b"y" * (3 * CREDENTIAL_SIZE_MAX))
    code, _, err = cli(capsys, *M, "secret", "set", "api-token")
    assert code == 1 and "stdin: the value is over 1048576 bytes" in err
    assert sys.stdin.buffer.tell() <= CREDENTIAL_SIZE_MAX + 3


def test_deploy_preflight_refuses_an_oversized_stored_value(repo: Path, example_manifest: dict[str, Any]) -> None:
    from nix_infra.agestore import load_recipients
    from nix_infra.cli_secrets import needed_secrets

    # stored before this check existed (or by hand): the store's own check is bypassed
    write_encrypted(repo / "secrets/api-token.age", b"z" * (CREDENTIAL_SIZE_MAX + 10), load_recipients(repo))
    opts = Options(flake=".", manifest_file=repo / "manifest.json", json_output=False, yes=True, debug=False)
    with pytest.raises(NixInfraError, match=r"secret api-token: 1048586 bytes, over systemd's credential limit"):
        needed_secrets(opts, opts.load_manifest(), ["ctrl001", "worker001"])


def test_the_credentials_of_one_unit_together_stay_under_systemds_total(example_manifest: dict[str, Any]) -> None:
    from nix_infra.secrets import check_delivery_sizes

    m = copy.deepcopy(example_manifest)
    m["secrets"] = ["a", "b"]
    m["apps"]["api"]["secrets"] = ["a", "b"]
    m["nodes"]["worker001"]["credentials"] = ["a", "b"]
    m["nodes"]["worker001"]["credentialUnits"] = {"a": ["podman-api.service"], "b": ["podman-api.service"]}
    manifest = parse_manifest(m)
    half = CREDENTIAL_SIZE_MAX // 2
    check_delivery_sizes(manifest, ["worker001"], {"a": b"1" * half, "b": b"2" * half})
    with pytest.raises(NixInfraError, match=r"worker001: podman-api.service loads a, b: 1048577 bytes together"):
        check_delivery_sizes(manifest, ["worker001"], {"a": b"1" * half, "b": b"2" * (half + 1)})


# ---- case 11: one newline rule for every input channel ------------------------------------------


def test_strip_final_newline_drops_exactly_one() -> None:
    from nix_infra.secrets import strip_final_newline

    assert strip_final_newline(b"abc\n") == b"abc"
    assert strip_final_newline(b"abc\r\n") == b"abc"
    assert strip_final_newline(b"abc\n\n") == b"abc\n"
    assert strip_final_newline(b"abc\r") == b"abc\r"
    assert strip_final_newline(b"abc") == b"abc"


def test_piped_file_and_prompt_store_the_same_value(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hexvalue = b"4f" * 32
    set_stdin(monkeypatch, hexvalue + b"\n")  # `openssl rand -hex 32 | nix-infra secret set x`
    assert cli(capsys, *M, "secret", "set", "piped")[0] == 0
    value_file = tmp_path / "v"
    value_file.write_bytes(hexvalue + b"\r\n")
    assert cli(capsys, *M, "secret", "set", "filed", "--from-file", str(value_file))[0] == 0
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(click, "prompt", lambda *a, **k: hexvalue.decode())
    assert cli(capsys, *M, "secret", "set", "typed")[0] == 0
    assert stored(repo, "piped") == stored(repo, "filed") == stored(repo, "typed") == hexvalue


def test_keep_newline_keeps_the_bytes_exactly(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_stdin(monkeypatch, b"pem\n")
    assert cli(capsys, *M, "secret", "set", "api-token", "--keep-newline")[0] == 0
    assert stored(repo, "api-token") == b"pem\n"
    set_stdin(monkeypatch, b"rotated\n")
    assert cli(capsys, *M, "secret", "rotate", "api-token")[0] == 0
    assert stored(repo, "api-token") == b"rotated"
    value_file = tmp_path / "v"
    value_file.write_bytes(b"kept\r\n")
    assert cli(capsys, *M, "secret", "rotate", "api-token", "--keep-newline", "--from-file", str(value_file))[0] == 0
    assert stored(repo, "api-token") == b"kept\r\n"
    set_stdin(monkeypatch, b"\n")
    code, _, err = cli(capsys, *M, "secret", "set", "x")
    assert code == 1 and "the value is empty" in err


def test_the_help_states_the_newline_rule(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["secret", "set"], ["secret", "rotate"], ["action"]):
        code, out, _ = cli(capsys, *command, "--help")
        assert code == 0 and "--keep-newline" in out and "newline" in out


# ---- case 12: clear errors instead of tracebacks ------------------------------------------------


def test_a_manifest_with_invalid_utf8(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "manifest.json").write_bytes(b'{"version": 1, "cluster": "\xff"}')
    code, _, err = cli(capsys, *M, "manifest")
    assert code == 1 and "manifest manifest.json is not UTF-8 text" in err


def test_a_deeply_nested_manifest(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = cli(capsys, *M, "manifest")
    assert code == 1 and "manifest manifest.json is not valid JSON: nested too deeply" in err


def test_nesting_inside_limits_of_json_but_beyond_the_manifests(example_manifest: dict[str, Any]) -> None:
    m = copy.deepcopy(example_manifest)
    value: Any = {}
    for _ in range(500):
        value = {"a": value}
    m["etcdSeed"]["/cluster/nodes/ctrl001"] = value
    with pytest.raises(NixInfraError, match="nested more than 32 levels"):
        parse_manifest(m)


def test_credentials_of_the_wrong_type(repo: Path, capsys: pytest.CaptureFixture[str], example_manifest: Any) -> None:
    m = copy.deepcopy(example_manifest)
    m["nodes"]["worker001"]["credentials"] = [1, 2]
    (repo / "manifest.json").write_text(json.dumps(m))
    code, _, err = cli(capsys, *M, "secret", "list")
    assert code == 1 and "manifest: nodes.worker001.credentials[0]: 1 is not a secret name" in err


def test_a_manifest_that_is_a_directory_or_duplicates_keys(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "m.json").write_text('{"version": 1, "version": 1}')
    code, _, err = cli(capsys, "--manifest", "m.json", "manifest")
    assert code == 1 and "the key 'version' appears twice" in err
    (repo / "m.json").write_text('{"version": NaN}')
    code, _, err = cli(capsys, "--manifest", "m.json", "manifest")
    assert code == 1 and "NaN is not a JSON number" in err


def test_recipients_with_invalid_utf8(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "secrets/recipients.txt").write_bytes(b"age1\xfe\n")
    set_stdin(monkeypatch, b"v")
    code, _, err = cli(capsys, *M, "secret", "set", "x")
    assert code == 1 and "secrets/recipients.txt is not UTF-8 text" in err


def test_dotenv_with_invalid_utf8(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HCLOUD_TOKEN", raising=False)
    (repo / ".env").write_bytes(b"HCLOUD_TOKEN=\xff\xfe\n")
    code, _, err = cli(capsys, *M, "plan")
    assert code == 1 and ".env is not UTF-8 text" in err


def test_a_token_with_a_newline_is_refused_without_showing_it(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HCLOUD_TOKEN", "secret-token-123\nX-Evil: 1")
    code, _, err = cli(capsys, *M, "plan")
    assert code == 1 and "HCLOUD_TOKEN" in err and "secret-token-123" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[]", "expected a JSON object"),
        (b'{"node": "worker001"}', "field hostKey is missing"),
        (b'{"node": "worker001", "hostKey": "ssh-ed25519 AAAA\\nevil.example ssh-ed25519 BBBB"}', "hostKey: not"),
        (
            b'{"node": "worker001", "hostKey": "ssh-ed25519 AAAA", "publicIpv4": "1.2.3.4 -oProxyCommand=x"}',
            "publicIpv4",
        ),
        (b'{"node": "worker001", "hostKey": "ssh-ed25519 AAAA", "sshPort": "22"}', "sshPort"),
        (b'{"node": "ctrl001", "hostKey": "ssh-ed25519 AAAA"}', "not the node this file is for"),
        (b"\xff", "is not UTF-8 text"),
    ],
)
def test_bad_facts_files(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: bytes,
    message: str,
) -> None:
    monkeypatch.setattr("os.execvp", lambda *a: pytest.fail(f"ssh was run: {a}"))
    (repo / "facts").mkdir()
    (repo / "facts/worker001.json").write_bytes(content)
    code, _, err = cli(capsys, *M, "ssh", "worker001")
    assert code == 1 and "facts/worker001.json" in err and message in err


def test_a_directory_where_a_facts_file_belongs(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.execvp", lambda *a: pytest.fail(f"ssh was run: {a}"))
    (repo / "facts/worker001.json").mkdir(parents=True)
    code, _, err = cli(capsys, *M, "ssh", "worker001")
    assert code == 1 and "facts/worker001.json is a directory" in err


def test_a_garbage_ca_certificate(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, *M, "init", "--cluster", "demo")[0] == 0
    (repo / "pki/ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    code, _, err = cli(capsys, *M, "pki", "issue")
    assert code == 1 and "pki/ca.crt is not a PEM certificate" in err
    with pytest.raises(NixInfraError, match="not a PEM certificate"):
        Pki(repo).ca_certificate()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["cmd", "-t", ",", "--", "true"], "--targets"),
        (["cmd", "-t", "", "--", "true"], "--targets"),
        (["status", "--on", ","], "--on"),
        (["status", "--on", " , "], "--on"),
        (["rollback", "--on", ","], "--on"),
    ],
)
def test_an_empty_selector_names_nothing_and_is_an_error(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], option: str
) -> None:
    monkeypatch.setattr("nix_infra.cli.node_status", lambda *a, **k: pytest.fail("status checked nodes"))
    monkeypatch.setattr("nix_infra.cli.run_everywhere", lambda *a, **k: pytest.fail("cmd ran"))
    code, _, err = cli(capsys, *M, "--yes", *args)
    assert code == 1 and f"{option} " in err and "names no node" in err


def test_ssh_takes_one_node_name(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.execvp", lambda *a: pytest.fail(f"ssh was run: {a}"))
    code, _, err = cli(capsys, *M, "ssh", "@ctrl")
    assert code == 2 and "NODE" in err and "not a node name" in err
    code, _, err = cli(capsys, *M, "ssh", "ghost")
    assert code == 1 and "NODE 'ghost': no such node" in err


def test_action_names_cannot_become_env_assignments_or_options(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, where in [
        (["worker001", "api", "a=b", "/bin/sh"], "ACTION"),
        (["worker001", "api", "-x"], "ACTION"),
        (["worker001", "api", "../x"], "ACTION"),
        (["worker001", "../api", "x"], "APP"),
        (["worker001", "api", "x", "--env", "1A=b"], "--env"),
        (["worker001", "api", "x", "--env", "é=b"], "--env"),
        (["worker001", "api", "x", "--store-as-secret", "../x"], "--store-as-secret"),
    ]:
        code, _, err = cli(capsys, *M, "action", *args)
        assert code == 2 and where in err, (args, err)


def test_etcd_keys_and_endpoints_are_checked(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, where in [
        (["get", ""], "PREFIX"),
        (["del", "--prefix", ""], "KEY"),
        (["put", "relative", "v"], "KEY"),
        (["watch", "/a\nb"], "PREFIX"),
        (["--etcd-endpoint", "http://x:1", "get", "/"], "--etcd-endpoint"),
    ]:
        code, _, err = cli(capsys, *M, "etcd", *args)
        assert code == 2 and where in err, (args, err)


def test_flake_references_cannot_be_options(capsys: pytest.CaptureFixture[str]) -> None:
    for ref in ("--impure", "-", "", "a\nb", "x#y"):
        code, _, err = cli(capsys, "--flake", ref, "manifest")
        assert code == 2 and "--flake" in err, (ref, err)


def test_a_nul_byte_in_a_file_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "--manifest", "a\x00b", "manifest")
    assert code == 2 and "--manifest" in err and "NUL" in err


def test_load_manifest_file_names_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NixInfraError, match="is a directory"):
        load_manifest_file(tmp_path)


def test_names_too_long_for_the_os(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the property tests: os.stat raises ENAMETOOLONG, which Path.exists/is_dir pass on."""
    monkeypatch.setattr("os.execvp", lambda *a: pytest.fail(f"ssh was run: {a}"))
    code, _, err = cli(capsys, *M, "--facts", "x" * 300, "ssh", "worker001")
    assert code == 1 and "File name too long" in err
    code, _, err = cli(capsys, "--flake", "y" * 300, "secret", "rekey")
    assert code == 0  # not a directory, so the repo is the working directory
    code, _, err = cli(capsys, *M, "--identity", "/dev/zero", "secret", "rekey")
    assert code == 1 and "identity /dev/zero: larger than" in err
    code, _, err = cli(capsys, "--manifest", "/dev/zero", "manifest")
    assert code == 1 and "manifest /dev/zero is larger than 64 MiB" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "x"])
def test_seconds_from_the_environment(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """float() takes "nan" and "inf"; an hcloud poll interval of nan was int(nan): a traceback."""
    monkeypatch.setenv("HCLOUD_TOKEN", "t")
    monkeypatch.setenv("HCLOUD_ENDPOINT", "http://127.0.0.1:9/v1")  # never reached
    monkeypatch.setenv("NIX_INFRA_HCLOUD_POLL_INTERVAL", value)
    code, _, err = cli(capsys, *M, "plan")
    assert code == 1 and "NIX_INFRA_HCLOUD_POLL_INTERVAL" in err and "is not a number of seconds" in err


def test_ssh_connect_timeout_digits_only(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.execvp", lambda *a: pytest.fail(f"ssh was run: {a}"))
    monkeypatch.setenv("NIX_INFRA_SSH_CONNECT_TIMEOUT", "\u00b2")  # "²".isdigit() is True, int("²") fails
    code, _, err = cli(capsys, *M, "ssh", "worker001")
    assert code == 1 and "NIX_INFRA_SSH_CONNECT_TIMEOUT" in err


def test_destroy_all_keeps_a_group_that_holds_servers_of_others(
    capsys: pytest.CaptureFixture[str],
    hcloud_env: dict[str, str],
    manifest_file: Path,
    fake: FakeHcloud,
    client: Client,
) -> None:
    assert cli(capsys, "--manifest", str(manifest_file), "--yes", "provision")[0] == 0
    [group] = client.placement_groups.get_all(name="demo-spread-1")
    client.servers.create(
        name="other-0",
        server_type=ServerType(name="cx22"),
        image=Image(name="debian-12"),
        placement_group=PlacementGroup(id=group.id),
    )
    code, _, err = cli(capsys, "--manifest", str(manifest_file), "destroy", "--all", "--confirm", "demo")
    assert code == 0, err
    assert "placement group demo-spread-1 kept: it holds 1 server(s) of others" in err
    snap = fake.snapshot()
    assert [s["name"] for s in snap["servers"]] == ["other-0"]
    assert [(g["name"], len(g["servers"])) for g in snap["placement_groups"]] == [("demo-spread-1", 1)]


def test_a_repos_env_cannot_send_the_environments_token_elsewhere(tmp_path: Path) -> None:
    # review finding: HCLOUD_ENDPOINT from a repo's .env plus HCLOUD_TOKEN from the
    # environment (a CI secret) sent the token to whatever the repo named, over http
    from nix_infra.hetzner.client import settings_from_env

    (tmp_path / ".env").write_text("HCLOUD_ENDPOINT=http://127.0.0.1:18777/v1\n")
    with pytest.raises(NixInfraError, match=r"would send the HCLOUD_TOKEN of your environment"):
        settings_from_env({"HCLOUD_TOKEN": "ci-secret"}, tmp_path)
    # with the token in .env too, the repo speaks for itself (a local fake API)
    assert settings_from_env({}, tmp_path).endpoint == "http://127.0.0.1:18777/v1"
    # the environment may point anywhere https, and http only on loopback
    assert settings_from_env({"HCLOUD_TOKEN": "t", "HCLOUD_ENDPOINT": "https://api.example/v1"}, None).endpoint
    for bad in ("http://10.0.0.1:1/v1", "http://api.hetzner.cloud/v1", "https://user:pw@api.example/v1", "ftp://x/"):
        with pytest.raises(NixInfraError, match=r"HCLOUD_ENDPOINT \(environment\).*is not allowed"):
            settings_from_env({"HCLOUD_TOKEN": "t", "HCLOUD_ENDPOINT": bad}, None)


def _set(path: str, value: Any) -> Any:
    def change(m: dict[str, Any]) -> None:
        *head, last = path.split(".")
        target = m
        for key in head:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = value

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        # review findings: a hand-made manifest failed mid-apply, or made provision disown its servers
        (_set("nodes.worker001.privateIp", "8.8.8.8"), "nodes.worker001.privateIp"),
        (_set("nodes.worker001.privateIp", "10.10.0.1"), "nodes.worker001.privateIp"),
        (_set("nodes.worker001.location", "ash"), "nodes.worker001.location"),
        (_set("network.subnet", "10.10.1.0/24"), "network.subnet"),
        (_set("nodes.worker001.labels.nix-infra/cluster", "other"), "nodes.worker001.labels"),
        (_set("nodes.worker001.labels", {}), "nodes.worker001.labels"),
        (_set("labels", {}), "labels"),
        (_set("etcd.members", ["worker001"]), "etcd.members"),
        (_set("nodes.worker001.wave", 7), "nodes.worker001.wave"),
        (_set("adminCidrs", ["203.0.113.7/24"]), "adminCidrs"),
    ],
)
def test_the_loader_refuses_what_lib_never_produces(example_manifest: dict[str, Any], change: Any, says: str) -> None:
    m = copy.deepcopy(example_manifest)
    change(m)
    with pytest.raises(NixInfraError, match=re.escape(f"manifest: {says}")):
        parse_manifest(m)


@pytest.mark.parametrize(
    "change",
    [
        # what lib accepts, the loader accepts (review finding: they disagreed)
        _set("nodes.ctrl001.serverType", "cx22.x"),
        _set("nodes.ctrl001.serverType", "cx_22"),
        _set("adminCidrs", ["::ffff:192.0.2.0/120"]),
        _set("adminCidrs", ["1:2:3:4:5:6:1.2.3.4/128"]),
        _set("apps.api.unit", "app@blue.service"),
    ],
)
def test_the_loader_accepts_what_lib_produces(example_manifest: dict[str, Any], change: Any) -> None:
    m = copy.deepcopy(example_manifest)
    change(m)
    parse_manifest(m)


@pytest.mark.parametrize("unit", [".hidden.service", "@x.service", "a\\x2d.service", "-x.service"])
def test_the_loader_refuses_units_lib_refuses(example_manifest: dict[str, Any], unit: str) -> None:
    m = copy.deepcopy(example_manifest)
    m["apps"]["api"]["unit"] = unit
    with pytest.raises(NixInfraError, match=r"apps\.api\.unit"):
        parse_manifest(m)


def test_a_ca_certificate_that_is_not_the_ca_keys_issues_nothing(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # review finding: a replaced pki/ca.crt was accepted and every certificate issued named an
    # issuer that did not sign it (etcd TLS would break on every node at the next delivery)
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert cli(capsys, *M, "init", "--cluster", "demo")[0] == 0
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "impostor CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (repo / "pki/ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    code, _, err = cli(capsys, *M, "pki", "issue")
    assert code == 1 and "pki/ca.crt is not the certificate of the CA key" in err
    assert not (repo / "pki/nodes").exists()


def test_a_private_key_in_recipients_is_never_echoed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # review finding: part of a pasted age private key was printed in the error
    secret = "AGE-SECRET-KEY-1W4RJHSND4L9T4G0R72CS23MZQ8XH5WPJDZJ5N6E0H0KQXN7KQ3QSK9ZCUA"
    (repo / "secrets/recipients.txt").write_text(f"{secret}\n")
    code, _, err = cli(capsys, *M, "secret", "set", "t", "--from-file", str(repo / "secrets/recipients.txt"))
    assert code != 0 and "PRIVATE key" in err
    assert "W4RJHSND" not in err and "AGE-SECRET-KEY-1" not in err


def test_control_sequences_from_a_manifest_are_escaped_in_errors(
    repo: Path, capsys: pytest.CaptureFixture[str], example_manifest: dict[str, Any]
) -> None:
    # review finding: a field named "\x1b[2J\x1b]0;pwned\x07" cleared the screen and set the title
    m = copy.deepcopy(example_manifest)
    m["nodes"]["worker001"]["\x1b[2J\x1b]0;pwned\x07"] = 1
    (repo / "manifest.json").write_text(json.dumps(m))
    code, _, err = cli(capsys, *M, "pki", "issue")
    assert code == 1
    assert "\x1b" not in err and "\x07" not in err and "\\x1b" in err
