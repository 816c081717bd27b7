"""Hostile strings into every CLI argument that names something, and into the manifest's fields.

Each value is either refused, with a message naming the option, argument or field, or it reaches
its sink inert (a path inside the repo, one argv element after `--`, shell-quoted words, the key
it was given), and never a traceback. With NIX_INFRA_BOUNDARY_STATS=1 each test prints, per field,
how many inputs it generated, refused and accepted.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shlex
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrage import x25519

from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore, NodeFacts, generate_host_key
from nix_infra.manifest import (
    DNS_LABEL,
    IMAGE,
    IPV4,
    LABEL_KEY,
    LABEL_VALUE,
    SECRET_NAME,
    SEED_KEY,
    SSH_KEY,
    SYSTEM_ATTR,
    UNIT_NAME,
    URL_PATH,
    parse_manifest,
)
from nix_infra.process import Result
from nix_infra.ssh import ssh_argv

from .conftest import run_cli
from .test_boundary import ecma_validator

CURATED = [
    "", " ", "-", "--", "-x", "--help", "--impure", "-oProxyCommand=id", "..", "../x", "../../../etc/passwd",
    "/", "/etc/passwd", "/dev/zero", "a/b", "a\\b", ".", ".hidden", "~", "~root", "a\n", "\n", "a\nb",
    "a\r\n", "a\rb", "a\x00b", "\x00", "a\tb", "a b", " a", "a ", "$(id)", "`id`", "${HOME}", "a;id",
    "a|id", "a&&id", "a>x", "a<x", "'", '"', "a'b", "*", "?", "[a]", "{a,b}", "!", "#", "%s%n%x", "{0}",
    "{}", "%(x)s", "{x!r}", "\x1b[31mred", "é", "ß", "\u202eevil", "\uff41", "\ufeffa", "😀", "İ", "a\u0301",
    "x" * 64, "x" * 65, "x" * 256, "x" * 5000, "@", "@worker", "@ctrl", "@nope", "@a=b", ",", ",,",
    "a,b", "worker001,", ",worker001", "a=b", "=", "api", "worker001", "ctrl001", "api-token",
    "podman-api.service", "/cluster/nodes/", "/cluster", "https://127.0.0.1:1", "x.service", "1",
    "manifest.json", "facts", "secrets/recipients.txt", "/dev/null",
]  # fmt: skip
SPECIALS = [*"abz09AZ-_./\\@:;|&$`'\"(){}[]<>*?~!#%^=+, \t\n\r\x00\x1b\x7f", "é", "\u202e", "😀", "\uff41", "\u2028"]
HOSTILE = st.one_of(
    st.sampled_from(CURATED),
    st.text(alphabet=st.sampled_from(SPECIALS), max_size=70),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(["worker001", "api", "x", "/cluster/", "api-token"]),
        st.sampled_from(CURATED),
    ),
    st.text(max_size=300),
)
EXAMPLES = int(os.environ.get("NIX_INFRA_BOUNDARY_EXAMPLES", "60"))  # per field
SETTINGS = settings(
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class Stats:
    """Per field: inputs generated, refused (with a message naming it), accepted (and inert)."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}

    def add(self, field: str, outcome: str) -> None:
        self.counts.setdefault(field, Counter())[outcome] += 1

    def show(self) -> None:
        if os.environ.get("NIX_INFRA_BOUNDARY_STATS"):
            for field, c in sorted(self.counts.items()):
                total = sum(c.values())
                print(
                    f"\nSTATS {field}: {total} generated, {c['refused']} refused, {c['accepted']} accepted, "
                    f"{c['traceback']} tracebacks"
                )


STATS = Stats()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    STATS.show()


def cli(capsys: pytest.CaptureFixture[str], field: str, *args: str) -> tuple[int, str, str]:
    """In-process nix-infra; any exception other than SystemExit escapes run_cli: it is counted as
    a traceback of `field` and fails the test."""
    try:
        code, out, err = run_cli(capsys, *args)
    except Exception:
        STATS.add(field, "traceback")
        raise
    assert "Traceback" not in out + err, err
    return code, out, err


def refused(code: int, err: str, where: str) -> bool:
    """A refusal: a usage error (2) or an error (1) whose message names `where`."""
    if code == 0:
        return False
    assert code in (1, 2), (code, err)
    assert where in err, (where, err)
    return True


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, example_manifest: dict[str, Any]) -> Path:
    """A repo with an age recipient and identity, the example manifest and facts for every node."""
    root = tmp_path_factory.mktemp("boundary")
    identity = x25519.Identity.generate()
    (root / "age.txt").write_text(f"{identity}\n")
    r = root / "repo"
    (r / "secrets").mkdir(parents=True)
    (r / "secrets/recipients.txt").write_text(f"{identity.to_public()}\n")
    (r / "manifest.json").write_text(json.dumps(example_manifest))
    store = FactsStore(r / "facts")
    for i, node in enumerate(example_manifest["nodes"]):
        store.write(NodeFacts(node, generate_host_key().public, f"198.51.100.{i + 10}"))
    return r


@pytest.fixture
def repo(world: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(world)
    monkeypatch.setenv("NIX_INFRA_IDENTITY", str(world.parent / "age.txt"))
    monkeypatch.delenv("HCLOUD_TOKEN", raising=False)
    monkeypatch.setattr("os.execvp", lambda *a: pytest.fail(f"exec {a}"))
    return world


M = ("--manifest", "manifest.json")


def inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


# ---- secret names -------------------------------------------------------------------------------


@SETTINGS
@given(name=HOSTILE)
def test_secret_set_name(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"value")))
    before = set((repo / "secrets").iterdir())
    code, _, err = cli(capsys, "secret set NAME", *M, "secret", "set", "--", name)
    if refused(code, err, "'NAME'"):
        assert set((repo / "secrets").iterdir()) == before
        STATS.add("secret set NAME", "refused")
        return
    target = repo / "secrets" / f"{name}.age"
    assert SECRET_NAME.fullmatch(name) and target.is_file() and inside(target, repo / "secrets")
    assert set((repo / "secrets").iterdir()) - before <= {target}
    target.unlink()
    STATS.add("secret set NAME", "accepted")


@pytest.mark.parametrize("command", ["rm", "rotate"])
@SETTINGS
@given(name=HOSTILE)
def test_secret_rm_rotate_name(repo: Path, capsys: pytest.CaptureFixture[str], name: str, command: str) -> None:
    before = set((repo / "secrets").iterdir())
    field = f"secret {command} NAME"
    code, _, err = cli(capsys, field, *M, "secret", command, "--", name)
    assert code != 0  # the store is empty
    assert set((repo / "secrets").iterdir()) == before
    if SECRET_NAME.fullmatch(name):  # a valid name reached the store, which says it is not there
        assert f"secret {name} does not exist" in err or f"secret {name} is still used by" in err
        STATS.add(field, "accepted")
    else:
        assert refused(code, err, "'NAME'")
        STATS.add(field, "refused")


# ---- node names, selectors, app and action names ------------------------------------------------


@SETTINGS
@given(node=HOSTILE)
def test_ssh_node(repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, node: str) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr("os.execvp", lambda file, argv: calls.append(argv))
    code, _, err = cli(capsys, "ssh NODE", *M, "ssh", "--", node, "uptime; id")
    if code != 0:
        assert refused(code, err, "NODE")
        STATS.add("ssh NODE", "refused")
        return
    [argv] = calls
    assert node in ("ctrl001", "worker001")
    # the node's shell runs the joined words (as OpenSSH), handed over as one quoted word after --
    assert argv[-2:] == ["--", shlex.join(["/bin/sh", "-c", "uptime; id"])]
    STATS.add("ssh NODE", "accepted")


@pytest.mark.parametrize("command", ["cmd", "status"])
@SETTINGS
@given(selector=HOSTILE)
def test_selectors(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, selector: str, command: str
) -> None:
    reached: list[list[str]] = []
    monkeypatch.setattr("nix_infra.cli.run_everywhere", lambda nodes, *a: reached.append([n.name for n in nodes]) or [])
    monkeypatch.setattr(
        "nix_infra.cli.node_status", lambda nodes, *a, **k: reached.append([n.name for n in nodes]) or []
    )
    monkeypatch.setattr("nix_infra.cli.ssh_target", lambda *a: None)  # as if every node had facts
    args = ["cmd", "-t", selector, "--", "true"] if command == "cmd" else ["status", "--on", selector]
    option = "--targets" if command == "cmd" else "--on"
    field = f"{command} {option}"
    code, _, err = cli(capsys, field, *M, *args)
    if code != 0 and not reached:
        assert refused(code, err, option)
        STATS.add(field, "refused")
        return
    [names] = reached
    assert names and set(names) <= {"ctrl001", "worker001"}
    STATS.add(field, "accepted")


@SETTINGS
@given(node=HOSTILE)
def test_destroy_node(repo: Path, capsys: pytest.CaptureFixture[str], node: str) -> None:
    code, _, err = cli(capsys, "destroy NODES", *M, "--yes", "destroy", "--", node)
    assert code != 0
    if DNS_LABEL.fullmatch(node):  # a valid name went on, to the missing API token
        assert "No Hetzner Cloud API token" in err
        STATS.add("destroy NODES", "accepted")
    else:
        assert refused(code, err, "NODES")
        STATS.add("destroy NODES", "refused")


ACTION_FIELDS = ["NODE", "APP", "ACTION", "ARGS", "--env", "--store-as-secret"]


@pytest.mark.parametrize("field", ACTION_FIELDS)
@SETTINGS
@given(value=HOSTILE)
def test_action(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str, field: str
) -> None:
    argvs: list[list[str]] = []

    def attached(argv: list[str], what: str) -> int:
        argvs.append(argv)
        return 0

    monkeypatch.setattr("nix_infra.cli_secrets.run_attached", attached)

    def captured(target: Any, command: list[str], **k: Any) -> Any:
        argv = ssh_argv(target, command)  # the command line OpenSSH would send: same quoting as the session's
        argvs.append(argv)
        return Result(tuple(argv), 0, "", "", b"output\n")

    monkeypatch.setattr("nix_infra.cli_secrets.run_remote", captured)
    stored: list[tuple[str, bytes]] = []
    monkeypatch.setattr("nix_infra.cli_secrets.SecretStore.set", lambda self, n, v: stored.append((n, v)))
    parts = {"NODE": "worker001", "APP": "api", "ACTION": "migrate"}
    extra: list[str] = []
    if field in parts:
        parts[field] = value
    elif field == "ARGS":
        extra = [value]
    elif field == "--env":
        extra = [f"--env={value}"]
    else:
        extra = [f"--store-as-secret={value}"]
    args = ["--", parts["NODE"], parts["APP"], parts["ACTION"]]
    if field == "ARGS":
        args = [*args, *extra]
        extra = []
    name = f"action {field}"
    code, _, err = cli(capsys, name, *M, "action", *extra, *args)
    if code != 0:
        where = {
            "NODE": "NODE",
            "APP": "APP",
            "ACTION": "ACTION",
            "--env": "--env",
            "--store-as-secret": "--store-as-secret",
        }
        assert field in where, (field, err)
        if field in ("NODE", "APP") and code == 1:  # a valid name the manifest does not have
            assert "not in the manifest" in err or "does not run on" in err
        else:
            assert refused(code, err, field)
        STATS.add(name, "refused")
        return
    [argv] = argvs
    assert argv[-2] == "--"
    words = shlex.split(argv[-1])
    assert words[0] == "env"
    i = words.index(f"/etc/nix-infra/actions/{parts['APP']}/{parts['ACTION']}")
    assert all("=" in w for w in words[1:i])  # env only takes assignments before the command
    if field == "ARGS":
        assert words[i + 1 :] == [value]
    if field == "--env":
        assert words[1:i] == [value]
    if field == "--store-as-secret":
        assert stored == [(value, b"output")] and SECRET_NAME.fullmatch(value)
    else:
        assert stored == []
    STATS.add(name, "accepted")


# ---- etcd keys, the flake, files ----------------------------------------------------------------


class FakeEtcd:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def get_prefix(self, key: str) -> dict[str, Any]:
        self.keys.append(key)
        return {}

    def put(self, key: str, value: bytes) -> None:
        self.keys.append(key)

    def delete(self, key: str, prefix: bool = False) -> int:
        self.keys.append(key)
        return 0

    def watch(self, key: str) -> Any:
        self.keys.append(key)

        class Events(list[Any]):
            def close(self) -> None:
                pass

        return Events()


@pytest.mark.parametrize("command", ["get", "put", "del", "watch"])
@SETTINGS
@given(key=HOSTILE)
def test_etcd_keys(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, key: str, command: str
) -> None:
    etcd = FakeEtcd()

    @contextlib.contextmanager
    def fake(opts: Any) -> Iterator[FakeEtcd]:
        yield etcd

    monkeypatch.setattr("nix_infra.cli_state._etcd", fake)
    args = [command, "--", key, *(["v"] if command == "put" else [])]
    where = "PREFIX" if command in ("get", "watch") else "KEY"
    code, _, err = cli(capsys, f"etcd {command} {where}", *M, "etcd", *args)
    if refused(code, err, where):
        assert etcd.keys == []
        STATS.add(f"etcd {command} {where}", "refused")
        return
    assert etcd.keys == [key] and key.startswith("/")  # the key itself, nothing else, reached etcd
    STATS.add(f"etcd {command} {where}", "accepted")


@SETTINGS
@given(ref=HOSTILE)
def test_flake_ref(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ref: str,
    example_manifest: dict[str, Any],
) -> None:
    from nix_infra.manifest import eval_manifest_argv

    seen: list[str] = []

    def load(flake: str) -> Any:
        seen.append(flake)
        return parse_manifest(example_manifest)

    monkeypatch.setattr("nix_infra.options.load_manifest_flake", load)
    code, _, err = cli(capsys, "--flake REF", "--flake", ref, "manifest")
    if refused(code, err, "--flake"):
        assert seen == []
        STATS.add("--flake REF", "refused")
        return
    argv = eval_manifest_argv(ref)
    assert seen == [ref] and argv[-1] == f"{ref}#nixInfra.manifest" and not argv[-1].startswith("-")
    STATS.add("--flake REF", "accepted")


FILE_OPTIONS = {
    "--flake (repo dir)": lambda v: ["--flake", v, "secret", "rekey"],
    "--manifest": lambda v: ["--manifest", v, "manifest"],
    "--from-file": lambda v: [*M, "secret", "set", "probe", "--from-file", v],
    "--identity": lambda v: [*M, "--identity", v, "secret", "rekey"],
    "--facts": lambda v: [*M, "--facts", v, "ssh", "worker001"],
}


@pytest.mark.parametrize("option", sorted(FILE_OPTIONS))
@SETTINGS
@given(path=HOSTILE)
def test_file_options(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, path: str, option: str
) -> None:
    monkeypatch.setattr("os.execvp", lambda *a: None)
    monkeypatch.setattr("nix_infra.options.load_manifest_flake", lambda flake: pytest.fail("nix eval ran"))
    code, _, err = cli(capsys, option, *FILE_OPTIONS[option](path))
    (repo / "secrets/probe.age").unlink(missing_ok=True)
    if code == 0:
        STATS.add(option, "accepted")  # e.g. --identity of an existing key file, --facts of facts/
        return
    assert code in (1, 2), err
    assert err.startswith(("error: ", "Usage: ")), err
    STATS.add(option, "refused")


# ---- manifest fields ----------------------------------------------------------------------------

VALIDATOR = ecma_validator()
Mutation = Callable[[dict[str, Any], str], None]


def rename_key(obj: dict[str, Any], old: str, new: str) -> None:
    obj[new] = obj.pop(old)


MANIFEST_FIELDS: dict[str, tuple[Mutation, re.Pattern[str] | None]] = {
    "cluster": (lambda m, v: m.update(cluster=v), DNS_LABEL),
    "nodes.<key>": (lambda m, v: rename_key(m["nodes"], "worker001", v), DNS_LABEL),
    "nodes.*.name": (lambda m, v: m["nodes"]["worker001"].update(name=v), DNS_LABEL),
    "nodes.*.privateIp": (lambda m, v: m["nodes"]["worker001"].update(privateIp=v), IPV4),
    "nodes.*.labels.<key>": (lambda m, v: m["nodes"]["worker001"]["labels"].update({v: "x"}), LABEL_KEY),
    "nodes.*.labels.<value>": (lambda m, v: m["nodes"]["worker001"]["labels"].update(team=v), LABEL_VALUE),
    "nodes.*.image": (lambda m, v: m["nodes"]["worker001"].update(image=v), IMAGE),
    "nodes.*.system": (lambda m, v: m["nodes"]["worker001"].update(system=v), SYSTEM_ATTR),
    "nodes.*.credentials": (lambda m, v: m["nodes"]["ctrl001"].update(credentials=[v]), SECRET_NAME),
    "nodes.*.credentialUnits": (
        lambda m, v: m["nodes"]["worker001"].update(credentialUnits={"api-token": [v]}),
        UNIT_NAME,
    ),
    "apps.<key>": (lambda m, v: rename_key(m["apps"], "api", v), DNS_LABEL),
    "apps.*.unit": (lambda m, v: m["apps"]["api"].update(unit=v), UNIT_NAME),
    "apps.*.path": (lambda m, v: m["apps"]["api"].update(path=v), URL_PATH),
    "sshKeys": (
        lambda m, v: m.update(sshKeys=[m["sshKeys"][0].split()[0] + " " + m["sshKeys"][0].split()[1] + " " + v]),
        SSH_KEY,
    ),
    "etcdSeed.<key>": (lambda m, v: m["etcdSeed"].update({v: {}}), SEED_KEY),
    "secrets": (lambda m, v: m.update(secrets=sorted({*m["secrets"], v})), SECRET_NAME),
}


@pytest.mark.parametrize("field", sorted(MANIFEST_FIELDS))
@SETTINGS
@given(value=HOSTILE)
def test_manifest_fields(example_manifest: dict[str, Any], value: str, field: str) -> None:
    mutate, grammar = MANIFEST_FIELDS[field]
    m = copy.deepcopy(example_manifest)
    mutate(m, value)
    schema_refuses = bool(list(VALIDATOR.iter_errors(m)))
    try:
        parsed = parse_manifest(m)
    except NixInfraError as exc:
        assert exc.message.startswith("manifest: "), exc.message
        STATS.add(f"manifest {field}", "refused")
        return
    except Exception:
        STATS.add(f"manifest {field}", "traceback")
        raise
    assert not schema_refuses, f"the loader accepts what the schema refuses: {field}={value!r}"
    if grammar is not None:
        text = value if field != "sshKeys" else parsed.ssh_keys[0]
        assert grammar.fullmatch(text), (field, value)
    STATS.add(f"manifest {field}", "accepted")
