"""Hostile strings in every string field of the cluster spec (issue 12).

Each generated value is either refused, with an error naming its field, or it
reaches every sink lib builds as one inert word: the health command
(`bash -c`), unit names, credential file paths, etcd keys and the data the
mesh haproxy template reads, the consumers' environment, image references,
Hetzner names. Specs are evaluated in batches, one `nix-instantiate` per
hypothesis example, via `(import ./lib).specErrors` and, when that is empty,
`evalCluster`. Run with `-s` to see the figures per field.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import nix_json
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 ops@laptop"
BASE: dict[str, Any] = {
    "name": "demo",
    "provider": {
        "type": "hetzner",
        "location": "fsn1",
        "networkZone": "eu-central",
        "network": "10.10.0.0/16",
        "image": "debian-12",
        "sshKeys": [KEY],
        "adminCidrs": ["203.0.113.0/24"],
    },
    "nodes": {
        "ctrl001": {"type": "ctrl", "serverType": "cx22"},
        "worker001": {"type": "worker", "serverType": "cpx21", "labels": {"team": "a"}},
    },
    "apps": {
        "api": {
            "group": "backends",
            "port": 8080,
            "publish": 5001,
            "nodes": ["worker001"],
            "envPrefix": "API",
            "image": "ghcr.io/acme/api:1.4",
            "secrets": ["api-token"],
            "path": "/v1",
            "healthCheck": {"type": "http", "path": "/healthz"},
        },
        "db": {
            "group": "services",
            "port": 5432,
            "publish": 15432,
            "nodes": ["worker001"],
            "unit": "postgresql.service",
            "secrets": ["db-password"],
            "healthCheck": {"type": "command", "command": "pg_isready -q"},
        },
    },
}

Spec = dict[str, Any]


def _set(*path: str | int) -> Callable[[Spec, str], None]:
    def apply(spec: Spec, value: str) -> None:
        target: Any = spec
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return apply


def _rename_node(spec: Spec, value: str) -> None:
    spec["nodes"][value] = spec["nodes"].pop("worker001")
    for app in spec["apps"].values():
        app["nodes"] = [value if n == "worker001" else n for n in app["nodes"]]


def _rename_app(spec: Spec, value: str) -> None:
    spec["apps"][value] = spec["apps"].pop("api")


def _label_key(spec: Spec, value: str) -> None:
    spec["nodes"]["worker001"]["labels"] = {value: "a"}


@dataclass(frozen=True)
class Field:
    name: str  # the field path an error must name (a prefix of it for keys and lists)
    apply: Callable[[Spec, str], None]
    bases: tuple[str, ...]  # valid values the hostile ones are built around
    key: bool = False  # the value is an attribute name: the path shows it plain or JSON-quoted


FIELDS: tuple[Field, ...] = (
    Field("name", _set("name"), ("demo", "prod-eu")),
    Field("provider.type", _set("provider", "type"), ("hetzner", "local")),
    Field("provider.location", _set("provider", "location"), ("fsn1",)),
    Field("provider.networkZone", _set("provider", "networkZone"), ("eu-central",)),
    Field("provider.network", _set("provider", "network"), ("10.10.0.0/16", "192.168.0.0/20")),
    Field("provider.image", _set("provider", "image"), ("debian-12", "ubuntu-24.04")),
    Field("provider.sshKeys[0]", _set("provider", "sshKeys", 0), (KEY,)),
    Field("provider.adminCidrs[0]", _set("provider", "adminCidrs", 0), ("203.0.113.0/24", "2001:db8::/32", "::/0")),
    Field("nodes.", _rename_node, ("worker001", "web")),
    Field("nodes.worker001.serverType", _set("nodes", "worker001", "serverType"), ("cpx21",)),
    Field("nodes.worker001.image", _set("nodes", "worker001", "image"), ("debian-12",)),
    Field("nodes.worker001.privateIp", _set("nodes", "worker001", "privateIp"), ("10.10.0.9",)),
    Field("nodes.worker001.labels", _label_key, ("team", "acme.io/tier"), key=True),
    Field('nodes.worker001.labels."team"', _set("nodes", "worker001", "labels", "team"), ("prod", "a.b-c_d")),
    Field("nodes.worker001.consumes[0]", lambda s, v: s["nodes"]["worker001"].update(consumes=[v]), ("services",)),
    Field("apps.", _rename_app, ("api", "web-2")),
    Field("apps.api.group", _set("apps", "api", "group"), ("backends",)),
    Field("apps.api.nodes", _set("apps", "api", "nodes", 0), ("worker001",)),
    Field("apps.api.envPrefix", _set("apps", "api", "envPrefix"), ("API", "MY_API2")),
    Field("apps.api.image", _set("apps", "api", "image"), ("ghcr.io/acme/api:1.4", "localhost:5000/a/b")),
    Field("apps.api.unit", _set("apps", "api", "unit"), ("api.service", "api@1.service")),
    Field("apps.api.secrets[0]", _set("apps", "api", "secrets", 0), ("api-token", "db.password")),
    Field("apps.api.protocol", _set("apps", "api", "protocol"), ("http", "tcp")),
    Field("apps.api.path", _set("apps", "api", "path"), ("/v1", "/", "/a?b=1")),
    Field("apps.api.healthCheck.type", _set("apps", "api", "healthCheck", "type"), ("http",)),
    Field("apps.api.healthCheck.path", _set("apps", "api", "healthCheck", "path"), ("/healthz", "/h?full=1")),
    Field("apps.db.healthCheck.command", _set("apps", "db", "healthCheck", "command"), ("pg_isready -q",)),
)

ATOMS = [
    ";", "&", "&&", "|", "$(id)", "`id`", "${HOME}", "$IFS", "'", '"', "\\", "\n", "\r", "\t", " ", "..", "/",
    "../", "-", "--privileged", " -v /:/host", "%s", "%n", "%x", "{{", "}}", "{{.}}", "${", "#", "*", "?", "~",
    "<", ">", "!", "=", ":", "@", ",", "[", "]", "(", ")", "é", "\u202e", "\u200b", "\U0001f600", "\x7f",
    "\x01", "\x1b[31m", "nix-infra-", "NIX_INFRA_", "LD_", "PYTHON", "\n  - name: forged",
]  # fmt: skip

# every character but NUL (which no Nix string can hold) and lone surrogates
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


def hostile(bases: tuple[str, ...]) -> st.SearchStrategy[str]:
    atom = st.sampled_from(ATOMS)
    base = st.sampled_from(bases)
    return st.one_of(
        base,
        st.lists(st.one_of(atom, TEXT), min_size=1, max_size=6).map("".join),
        st.tuples(base, atom).map("".join),
        st.tuples(atom, base).map("".join),
        st.tuples(base, atom, base).map("".join),
        st.tuples(base, st.integers(40, 5000)).map(lambda t: t[0] + "a" * t[1]),
        base.map(lambda b: "-" + b),
        base.map(lambda b: b.upper()),
    )


SINKS = r"""
spec:
let
  lib = import ./lib;
  c = lib.evalCluster spec;
  nodes = builtins.attrValues c.nodes;
  apps = d: builtins.attrValues d.config.apps;
  mNodes = builtins.attrValues c.manifest.nodes;
in {
  health = builtins.concatMap (d: map (a: {
    inherit (a) name port; type = a.healthCheck.type; path = a.healthCheck.path; command = a.healthCheck.command;
    timeout = a.healthCheck.timeoutSeconds; cmd = d.config.apps.${a.name}.registration.healthCmd;
  }) d.hostedApps) nodes;
  units = builtins.concatMap (d:
    map (a: a.unit) (apps d) ++ builtins.concatLists (builtins.attrValues d.credentialUnits)) nodes;
  files = builtins.concatMap (d:
    map (n: "${d.config.credentials.dir}/${n}") d.config.credentials.names
    ++ builtins.concatMap (a: map (s: "/run/credentials/${a.unit}/${s}") a.secrets) (apps d)) nodes;
  images = builtins.filter (x: x != null) (builtins.concatMap (d: map (a: a.image) (apps d)) nodes);
  seed = c.etcdSeed;
  env = map (d: { env = d.consumerEnv; consumed = builtins.length d.consumedApps; }) nodes;
  servers = map (n: "${c.manifest.cluster}-${n}") (builtins.attrNames c.manifest.nodes);
  words = [ c.manifest.cluster c.manifest.provider.image ] ++ c.manifest.secrets ++ c.manifest.adminCidrs
    ++ builtins.concatMap (n: [ n.name n.serverType n.image n.location ] ++ n.consumes) mNodes
    ++ builtins.concatMap (a: [ a.name a.group a.protocol a.unit ] ++ a.nodes) (builtins.attrValues c.manifest.apps);
  labels = builtins.concatMap (n: builtins.attrNames n.labels ++ builtins.attrValues n.labels) mNodes;
}
"""


def evaluate(specs: list[Spec]) -> list[dict[str, Any]]:
    """specErrors of every spec, or its sinks when it has none: one nix-instantiate."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8", delete=False) as f:
        json.dump(specs, f, ensure_ascii=False)
    try:
        expr = (
            f"let lib = import ./lib; sinks = {SINKS}; in map (spec: let e = lib.specErrors spec; in "
            "if e != [ ] then { errors = e; } else { sinks = sinks spec; }) "
            f"(builtins.fromJSON (builtins.readFile {json.dumps(f.name)}))"
        )
        result: list[dict[str, Any]] = nix_json(expr)
        return result
    finally:
        Path(f.name).unlink()


LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
# C0 and C1 controls, DEL, line separators, bidi overrides and isolates
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]")


def inert_word(w: object) -> bool:
    """A word the shell takes as it is (nothing to quote), no option, no path traversal."""
    return (
        isinstance(w, str)
        and w != ""
        and shlex.quote(w) == w
        and not w.startswith("-")
        and ".." not in w.split("/")
        and w.isascii()
    )


def escape_shell_arg(word: str) -> str:
    """nixpkgs' lib.escapeShellArg: safe words as they are, anything else in single quotes."""
    if re.fullmatch(r"[A-Za-z0-9,._+:@%/-]+", word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def sink_problems(s: dict[str, Any]) -> Iterator[str]:
    """Every place an accepted value lands that is not one inert word."""
    for h in s["health"]:
        t = str(h["timeout"])
        if h["type"] == "http":
            want = ["curl", "-fsS", "-o", "/dev/null", "--max-time", t, f"http://127.0.0.1:{h['port']}{h['path']}"]
        elif h["type"] == "tcp":
            want = ["timeout", t, "bash", "-c", f"</dev/tcp/127.0.0.1/{h['port']}"]
        else:  # the user's command is code by contract: it must arrive exactly as written
            want = None
            if h["cmd"] != h["command"]:
                yield f"health command of {h['name']} changed: {h['cmd']!r}"
        # every word quoted (so bash -c sees no operator, expansion or glob) and splitting back to the words
        if want is not None and (h["cmd"] != " ".join(map(escape_shell_arg, want)) or shlex.split(h["cmd"]) != want):
            yield f"health command of {h['name']} is not the quoted words {want!r}: {h['cmd']!r}"
    for w in s["units"] + s["files"] + s["images"] + s["servers"] + s["words"]:
        if not inert_word(w):
            yield f"not an inert word: {w!r}"
    for u in s["units"]:
        if not u.endswith(".service") or len(u) > 255:
            yield f"not a service unit: {u!r}"
    for key, value in s["seed"].items():
        if key == "/coreos.com/network/config":  # flannel's, from lib's constants: no spec string reaches it
            if value["Network"] != "10.244.0.0/16" or value["Backend"]["Type"] != "wireguard":
                yield f"flannel config {value!r}"
            continue
        parts = key.split("/")
        if parts[:2] != ["", "cluster"] or not all(LABEL.fullmatch(p) or p == "meta_data" for p in parts[2:]):
            yield f"etcd key with a segment that is not a DNS label: {key!r}"
        if parts[2] == "nodes":
            if value["name"] != parts[3] or not all(LABEL.fullmatch(g) for g in value["services"]):
                yield f"node record {value!r}"
        else:  # meta_data: what the mesh template reads
            ports = (value["publish"]["port"], value["port"])
            if not all(isinstance(p, int) for p in ports) or value["env"]["PROTOCOL"] not in ("http", "tcp"):
                yield f"meta_data {value!r}"
            if CONTROL.search(value["env"]["PATH"]) or not ENV_NAME.fullmatch(value["env_prefix"]):
                yield f"meta_data {value!r}"
    for node in s["env"]:
        env = node["env"]
        if len(env) != 4 * node["consumed"]:
            yield f"consumer variables overwrite each other: {sorted(env)}"
        for name, value in env.items():
            if not ENV_NAME.fullmatch(name) or CONTROL.search(value) or not value.isascii():
                yield f"consumer variable {name}={value!r}"
    for w in s["labels"]:
        if w and not inert_word(w):
            yield f"label {w!r}"


def names_field(errors: list[str], field: Field, value: str) -> bool:
    if not field.name.endswith("."):
        return any(e.startswith((f"{field.name}:", f"{field.name}.", f"{field.name}[")) for e in errors)
    # an attribute name: shown plain, or as a JSON string when it is not a plain name
    for e in errors:
        if not e.startswith(field.name):
            continue
        rest = e[len(field.name) :]
        # a long name is cut to its first 100 bytes, or only its length (bytes) is shown
        length = f"({len(value.encode())} characters)"
        if rest.startswith(f"a string {length}"):
            return True
        if rest.startswith('"'):
            try:
                shown, end = json.JSONDecoder().raw_decode(rest)
            except ValueError:
                continue
            if shown == value and rest[end : end + 1] in (":", "."):
                return True
            if value.startswith(shown) and rest[end:].startswith(f"... {length}"):
                return True
        elif rest.startswith(value) and rest[len(value) : len(value) + 1] in (":", "."):
            return True
    return False


FIGURES: dict[str, Counter[str]] = {f.name: Counter() for f in FIELDS}
PER_FIELD = 30


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    total: Counter[str] = Counter()
    print("\nhostile spec strings: field, generated, refused, accepted and inert, reaching a sink unquoted")
    for name, c in FIGURES.items():
        total.update(c)
        print(f"  {name:32} {c['generated']:5d} {c['refused']:5d} {c['inert']:5d} {c['unquoted']:3d}")
    print(f"  {'total':32} {total['generated']:5d} {total['refused']:5d} {total['inert']:5d} {total['unquoted']:3d}")


# no shrinking: a batch of ~800 specs shrinks for minutes; the failure lists every bad value anyway
@settings(
    max_examples=4,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.data_too_large, HealthCheck.large_base_example, HealthCheck.too_slow],
)
@given(st.data())
def test_hostile_strings_are_refused_or_inert(data: st.DataObject) -> None:
    cases: list[tuple[Field, str]] = []
    specs: list[Spec] = []
    for field in FIELDS:
        for value in data.draw(st.lists(hostile(field.bases), min_size=PER_FIELD, max_size=PER_FIELD)):
            spec = copy.deepcopy(BASE)
            field.apply(spec, value)
            cases.append((field, value))
            specs.append(spec)
    results = evaluate(specs)
    assert len(results) == len(cases)
    failures = []
    for (field, value), result in zip(cases, results, strict=True):
        counts = FIGURES[field.name]
        counts["generated"] += 1
        if "errors" in result:
            counts["refused"] += 1
            errors = result["errors"]
            if not names_field(errors, field, value):
                failures.append(f"{field.name} = {value!r}: refused, but no error names the field: {errors}")
            forged = [e for e in errors if CONTROL.search(e)]
            if forged:
                failures.append(f"{field.name} = {value!r}: a message carries a control character: {forged}")
        else:
            problems = list(sink_problems(result["sinks"]))
            if problems:
                counts["unquoted"] += 1
                failures.append(f"{field.name} = {value!r}: accepted, but {problems}")
            else:
                counts["inert"] += 1
    assert failures == [], "\n".join(failures[:20])


def test_the_checks_catch_what_the_original_lib_let_through() -> None:
    """The sink checks can fail: an unquoted health command, a hostile unit and image are caught."""
    sinks = {
        "health": [{"name": "api", "port": 8080, "type": "http", "path": "/h?a=1&b=2", "command": None, "timeout": 5,
                    "cmd": "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8080/h?a=1&b=2"}],
        "units": ["-Hroot@example.service"], "files": [], "images": ["ghcr.io/acme/api:1 --privileged -v /:/host"],
        "seed": {}, "env": [{"env": {"DB_HOST": "127.0.0.1"}, "consumed": 2}], "servers": [], "words": [],
        "labels": [],
    }  # fmt: skip
    problems = list(sink_problems(sinks))
    assert any(p.startswith("health command of api is not the quoted words") for p in problems)
    assert "not an inert word: '-Hroot@example.service'" in problems
    assert "not an inert word: 'ghcr.io/acme/api:1 --privileged -v /:/host'" in problems
    assert any(p.startswith("consumer variables overwrite") for p in problems)
