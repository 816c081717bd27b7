"""Kill-point harness (issue 13): run a nix-infra command as a subprocess, kill it (SIGKILL or
SIGINT) at its N-th step boundary, run it again, and check that the repo is intact and clean.

A step boundary is just before and just after each rename that commits a file (os.replace),
each unlink, and, for provision, each Hetzner API request (the fake's). The subprocess counts
them with hooks set before nix-infra starts; nix-infra itself has no test hooks.

intact: the re-run succeeds; secrets decrypt to the values last asked for, for exactly the
        current recipients; every certificate matches its key and the CA; provision's pins
        are the keys the servers were created with, one server per node.
clean:  no temp file, no plaintext value or private key anywhere in the repo, no file a
        removed recipient can decrypt.

`./bin/killpoint-sweep` runs every point of every scenario with both signals; the test suite
runs a sample (tests/test_killpoints.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyrage import x25519

from nix_infra.agestore import load_identity, load_recipients
from nix_infra.controlplane import init_repo, issue_certificates
from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore
from nix_infra.fake_hcloud import FakeHcloud
from nix_infra.files import stale_temp_files
from nix_infra.lock import repo_lock
from nix_infra.manifest import parse_manifest
from nix_infra.pki import Pki, wanted_certificates
from nix_infra.secrets import SecretStore, recipient_count

BOOTSTRAP = r"""
import os, signal, sys, threading
_at = int(os.environ.get("NIX_INFRA_KP_AT", "0"))
_sig = signal.SIGKILL if os.environ.get("NIX_INFRA_KP_SIG", "KILL") == "KILL" else signal.SIGINT
_count = os.environ["NIX_INFRA_KP_COUNT"]
_n = 0
_guard = threading.Lock()
# Ctrl-C at a terminal raises KeyboardInterrupt. A child of a shell without job control (a CI
# agent, `cmd &`, nohup) inherits SIGINT ignored, and Python then keeps ignoring it: the command
# would run to its end and the INT points would kill nothing. Give it the terminal's behaviour.
signal.signal(signal.SIGINT, signal.default_int_handler)

def _point():
    global _n
    with _guard:
        _n += 1
        hit = _n == _at
        with open(_count, "w") as f:
            f.write(str(_n))
    if hit:
        os.kill(os.getpid(), _sig)

def _around(fn):
    def hooked(*args, **kwargs):
        _point()
        result = fn(*args, **kwargs)
        _point()
        return result
    return hooked

os.replace = _around(os.replace)
os.unlink = _around(os.unlink)
if os.environ.get("NIX_INFRA_KP_HTTP"):
    from requests.adapters import HTTPAdapter
    HTTPAdapter.send = _around(HTTPAdapter.send)
from nix_infra.cli import main
sys.argv = ["nix-infra", *sys.argv[1:]]
main()
"""

PRIVATE_MARKERS = (b"PRIVATE KEY", b"AGE-SECRET-KEY-")


@dataclass
class Repo:
    """One scenario's cluster repo and what it must hold after the command."""

    root: Path
    manifest: Path
    keep: Path  # the operator's identity: a recipient before and after
    drop: Path  # a recipient removed before the command (rekey), else unused
    values: dict[str, bytes] = field(default_factory=dict)  # secret -> value expected after
    gone: set[str] = field(default_factory=set)  # secrets that must not exist after
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    accept_rerun: tuple[str, ...] = ()  # re-run errors that mean "already done"


@dataclass(frozen=True)
class Scenario:
    name: str
    prepare: Callable[[Path, dict[str, Any]], Repo]
    args: Callable[[Repo], list[str]]
    http: bool = False


@dataclass(frozen=True)
class Outcome:
    scenario: str
    point: int
    signal: str
    killed: bool
    intact: bool
    clean: bool
    problems: tuple[str, ...]


def _identity(path: Path) -> x25519.Identity:
    key = x25519.Identity.generate()
    path.write_text(f"{key}\n")
    return key


def _base(tmp: Path, manifest: dict[str, Any], *, pki: bool = True, drop_recipient: bool = False) -> Repo:
    root = tmp / "repo"
    root.mkdir(parents=True)
    keep, drop = tmp / "keep.txt", tmp / "drop.txt"
    keep_key, drop_key = _identity(keep), _identity(drop)
    mfile = tmp / "manifest.json"
    mfile.write_text(json.dumps(manifest))
    repo = Repo(root, mfile, keep, drop)
    if not pki:
        return repo
    recipients = [str(keep_key.to_public())] + ([str(drop_key.to_public())] if drop_recipient else [])
    init_repo(root, "demo", recipients, None)
    issue_certificates(root, parse_manifest(manifest), lambda: load_identity(keep))
    with repo_lock(root, "killpoints setup"):  # .nix-infra/ exists: the points are the command's own
        pass
    return repo


def _init(tmp: Path, manifest: dict[str, Any]) -> Repo:
    return _base(tmp, manifest, pki=False)


def _pki_issue(tmp: Path, manifest: dict[str, Any]) -> Repo:
    repo = _base(tmp, manifest)
    shutil.rmtree(repo.root / "pki" / "nodes")
    (repo.root / "pki" / "admin.crt").unlink()
    (repo.root / "pki" / "admin.key.age").unlink()
    return repo


def _pki_reissue(tmp: Path, manifest: dict[str, Any]) -> Repo:
    """Every certificate must be issued again: the CA was replaced."""
    repo = _base(tmp, manifest)
    pki = Pki(repo.root)
    pki.ca_path.unlink()
    pki.key_path("ca").unlink()
    pki.create_ca("demo", load_recipients(repo.root))
    return repo


def _secret_set(tmp: Path, manifest: dict[str, Any]) -> Repo:
    repo = _base(tmp, manifest)
    repo.stdin = b"set-value-7f3a91\n"
    repo.values = {"s1": b"set-value-7f3a91"}
    return repo


def _secret_rotate(tmp: Path, manifest: dict[str, Any]) -> Repo:
    repo = _base(tmp, manifest)
    SecretStore(repo.root).set("s1", b"old-value-2b8c44")
    repo.stdin = b"new-value-91d0e2"
    repo.values = {"s1": b"new-value-91d0e2"}
    return repo


def _secret_rm(tmp: Path, manifest: dict[str, Any]) -> Repo:
    repo = _base(tmp, manifest)
    store = SecretStore(repo.root)
    store.set("s1", b"kept-value-55aa01")
    store.set("s2", b"removed-value-c0ffee")
    repo.values = {"s1": b"kept-value-55aa01"}
    repo.gone = {"s2"}
    repo.accept_rerun = ("secret s2 does not exist",)
    return repo


def _rekey(tmp: Path, manifest: dict[str, Any]) -> Repo:
    repo = _base(tmp, manifest, drop_recipient=True)
    store = SecretStore(repo.root)
    repo.values = {"s1": b"rekey-one-3e3e3e", "s2": b"rekey-two-4f4f4f"}
    for name, value in repo.values.items():
        store.set(name, value)
    keep_public = load_identity(repo.keep).public[0]
    (repo.root / "secrets" / "recipients.txt").write_text(f"# ops\n{keep_public}\n")  # drop is removed
    return repo


def _common(repo: Repo) -> list[str]:
    return ["--identity", str(repo.keep), "--manifest", str(repo.manifest)]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("init", _init, lambda r: [*_common(r), "init", str(r.root)]),
        Scenario("pki-issue", _pki_issue, lambda r: [*_common(r), "pki", "issue"]),
        Scenario("pki-reissue", _pki_reissue, lambda r: [*_common(r), "pki", "issue"]),
        Scenario("secret-set", _secret_set, lambda r: [*_common(r), "secret", "set", "s1"]),
        Scenario("secret-rotate", _secret_rotate, lambda r: [*_common(r), "secret", "rotate", "s1"]),
        Scenario("secret-rm", _secret_rm, lambda r: [*_common(r), "secret", "rm", "s2"]),
        Scenario("secret-rekey", _rekey, lambda r: [*_common(r), "secret", "rekey"]),
    )
}


def run_nix_infra(repo: Repo, args: list[str], at: int, sig: str, counter: Path) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        **repo.env,
        "NIX_INFRA_KP_AT": str(at),
        "NIX_INFRA_KP_SIG": sig,
        "NIX_INFRA_KP_COUNT": str(counter),
    }
    if "HCLOUD_ENDPOINT" in repo.env:
        env["NIX_INFRA_KP_HTTP"] = "1"
    return subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, *args],
        cwd=repo.root,
        env=env,
        input=repo.stdin,
        capture_output=True,
        timeout=300,
        check=False,
    )


# ---- checks -------------------------------------------------------------------------------------


def check_repo(repo: Repo, manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems with intactness, problems with cleanliness) of a secret/PKI repo."""
    intact: list[str] = []
    clean: list[str] = []
    root = repo.root
    keep = load_identity(repo.keep)
    drop = load_identity(repo.drop)
    try:
        recipients = load_recipients(root)
    except NixInfraError as exc:
        return [str(exc)], clean
    store = SecretStore(root)
    for name, value in repo.values.items():
        try:
            got = store.get(name, keep)
        except NixInfraError as exc:
            intact.append(f"secret {name}: {exc}")
            continue
        if got != value:
            intact.append(f"secret {name}: decrypts to another value")
    for name in repo.gone:
        if store.exists(name):
            intact.append(f"secret {name} still exists")
    for path in store.encrypted_files():
        data = path.read_bytes()
        if recipient_count(data) != len(recipients):
            intact.append(f"{path.relative_to(root)}: {recipient_count(data)} recipients, not {len(recipients)}")
        try:
            keep.decrypt(data, str(path))
        except NixInfraError:
            intact.append(f"{path.relative_to(root)}: the operator cannot decrypt it")
    intact += _check_pki(root, manifest, keep)
    dropped = {p for p in drop.public} - {r.text for r in recipients}
    plain = [*repo.values.values(), b"removed-value-c0ffee", b"old-value-2b8c44"]
    for path in _files(root):
        rel = path.relative_to(root)
        if path.name.startswith(".") and path.name not in (".gitignore", "lock", ".nix-infra.lock"):
            clean.append(f"{rel}: hidden file left behind")
        data = path.read_bytes()
        if any(v in data for v in plain) or any(m in data for m in PRIVATE_MARKERS):
            clean.append(f"{rel}: plaintext")
        if dropped and data.startswith(b"age-encryption.org/"):
            try:
                drop.decrypt(data, str(path))
                clean.append(f"{rel}: decryptable by the removed recipient")
            except NixInfraError:
                pass
    clean += [f"{p.relative_to(root)}: temp file" for p in stale_temp_files([root])]
    return intact, clean


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for n in names:
            yield Path(dirpath) / n


def _check_pki(root: Path, manifest: dict[str, Any], keep: Any) -> list[str]:
    problems: list[str] = []
    pki = Pki(root)
    if not pki.ca_path.exists():
        return ["pki/ca.crt missing"]
    ca = x509.load_pem_x509_certificate(pki.ca_path.read_bytes())
    specs = {s.name: s for s in wanted_certificates(parse_manifest(manifest))}
    names = ["ca"]
    if (root / "pki" / "admin.crt").exists() or (root / "pki" / "nodes").exists():
        names += list(specs)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for name in names:
        try:
            cert = x509.load_pem_x509_certificate(pki.cert_path(name).read_bytes())
            key = serialization.load_pem_private_key(pki.private_key_pem(name, keep), password=None)
        except (OSError, ValueError, NixInfraError) as exc:
            problems.append(f"pki {name}: {exc}")
            continue
        if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
            problems.append(f"pki {name}: the certificate does not match its key")
        try:
            cert.verify_directly_issued_by(ca)
        except Exception as exc:  # InvalidSignature is no ValueError
            problems.append(f"pki {name}: not issued by the CA ({type(exc).__name__})")
        if name != "ca" and pki.state(specs[name]).reason:
            problems.append(f"pki {name}: would be issued again")
    return problems


# ---- provision, against the fake Hetzner API ------------------------------------------------------


class KeyRecorder:
    """Fake server hooks that keep the user data (the cloud-init host key) each server booted with."""

    def __init__(self) -> None:
        self.user_data: dict[str, str] = {}

    def allocate_ipv4(self, server_id: int) -> str:
        return f"198.51.100.{server_id}"

    def boot(self, server: dict[str, Any], authorized_keys: list[str], user_data: str | None) -> None:
        self.user_data[str(server["name"])] = user_data or ""

    def delete(self, server: dict[str, Any]) -> None:
        pass


def provision_point(
    manifest: dict[str, Any], work: Path, point: int, sig: str, latency: float = 0.02
) -> tuple[Outcome, int]:
    """Provision into an empty fake project, killed at `point` (0: not at all), then again.
    Returns the outcome and how many points the first run passed."""
    hooks = KeyRecorder()
    fake = FakeHcloud(token="test-token", hooks=hooks).start()
    fake.set_faults(latency_seconds=latency)
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=f"provision-{point}-{sig}-"))
    try:
        root = tmp / "repo"
        root.mkdir()
        mfile = tmp / "manifest.json"
        mfile.write_text(json.dumps(manifest))
        env = {
            "HCLOUD_TOKEN": "test-token",
            "HCLOUD_ENDPOINT": fake.endpoint,
            "NIX_INFRA_HCLOUD_POLL_INTERVAL": "0.01",
            "NIX_INFRA_HCLOUD_BACKOFF": "0.01",
        }
        repo = Repo(root, mfile, tmp / "unused", tmp / "unused", env=env)
        args = ["--manifest", str(mfile), "--yes", "provision"]
        first = run_nix_infra(repo, args, point, sig, tmp / "points")
        passed = int((tmp / "points").read_text()) if (tmp / "points").exists() else 0
        if point == 0:
            if first.returncode != 0:
                raise AssertionError(f"provision: the unkilled run failed: {first.stderr.decode()[-2000:]}")
            return Outcome("provision", 0, sig, False, True, True, ()), passed
        again = run_nix_infra(repo, args, 0, sig, tmp / "points-rerun")
        intact: list[str] = []
        clean: list[str] = []
        if again.returncode != 0:
            intact.append(f"re-run failed: {again.stderr.decode().strip()[-500:]}")
        servers: dict[str, list[str]] = {}
        for s in fake.snapshot()["servers"]:
            servers.setdefault(s["labels"].get("nix-infra/node", "?"), []).append(s["name"])
        facts = FactsStore(root / "facts")
        for node in manifest["nodes"]:
            names = servers.get(node, [])
            if len(names) != 1:
                intact.append(f"{node}: {len(names)} servers")
                continue
            known = facts.read(node)
            if known is None or not facts.is_pinned(known):
                intact.append(f"{node}: no pinned host key")
            elif known.host_key.split()[1] not in hooks.user_data.get(names[0], ""):
                intact.append(f"{node}: the pinned key is not the one the server was created with")
        for path in _files(root):
            rel = path.relative_to(root)
            if path.name.startswith(".") and path.name not in (".gitignore", "lock", ".nix-infra.lock"):
                clean.append(f"{rel}: hidden file left behind")
            if any(m in path.read_bytes() for m in PRIVATE_MARKERS):
                clean.append(f"{rel}: a private key in the clear")
        outcome = Outcome("provision", point, sig, first.returncode != 0, not intact, not clean, tuple(intact + clean))
        return outcome, passed
    finally:
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_provision(manifest: dict[str, Any], work: Path, signals: list[str], max_points: int) -> list[Outcome]:
    _, total = provision_point(manifest, work, 0, "KILL")
    points = sample(total, max_points) if max_points else list(range(1, total + 1))
    return [provision_point(manifest, work, p, s)[0] for s in signals for p in points]


# ---- one point ----------------------------------------------------------------------------------


def count_points(scenario: Scenario, manifest: dict[str, Any], work: Path) -> int:
    """How many step boundaries the command passes when nothing kills it."""
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=f"{scenario.name}-count-"))
    repo = scenario.prepare(tmp, manifest)
    counter = tmp / "points"
    result = run_nix_infra(repo, scenario.args(repo), 0, "KILL", counter)
    if result.returncode != 0:
        raise AssertionError(f"{scenario.name}: the unkilled run failed: {result.stderr.decode()[-2000:]}")
    return int(counter.read_text()) if counter.exists() else 0


def run_point(scenario: Scenario, manifest: dict[str, Any], work: Path, point: int, sig: str) -> Outcome:
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=f"{scenario.name}-{point}-{sig}-"))
    repo = scenario.prepare(tmp, manifest)
    counter = tmp / "points"
    args = scenario.args(repo)
    first = run_nix_infra(repo, args, point, sig, counter)
    killed = first.returncode != 0
    again = run_nix_infra(repo, args, 0, sig, tmp / "points-rerun")
    intact: list[str] = []
    if again.returncode != 0 and not any(a in again.stderr.decode() for a in repo.accept_rerun):
        intact.append(f"re-run failed: {again.stderr.decode().strip()[-500:]}")
    more, clean = check_repo(repo, manifest)
    intact += more
    outcome = Outcome(scenario.name, point, sig, killed, not intact, not clean, tuple(intact + clean))
    shutil.rmtree(tmp, ignore_errors=True)
    return outcome


def sample(total: int, want: int) -> list[int]:
    """Up to `want` points spread over 1..total, first and last included."""
    if total <= want:
        return list(range(1, total + 1))
    step = (total - 1) / (want - 1)
    return sorted({1 + round(i * step) for i in range(want)})


def summary(outcomes: list[Outcome]) -> str:
    return (
        f"points tried {len(outcomes)}, killed {sum(o.killed for o in outcomes)}, "
        f"intact {sum(o.intact for o in outcomes)}, clean {sum(o.clean for o in outcomes)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=[*SCENARIOS, "provision"], help="default: all")
    parser.add_argument("--signals", default="KILL,INT", help="KILL, INT or both (default)")
    parser.add_argument("--max-points", type=int, default=0, help="per scenario and signal (0: every point)")
    ns = parser.parse_args()
    from tests.conftest import example_manifest_data

    manifest = example_manifest_data()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="nix-infra-killpoints-") as work_dir:
        work = Path(work_dir)
        for name in ns.scenarios:
            if name == "provision":
                results = sweep_provision(manifest, work, ns.signals.split(","), ns.max_points)
            else:
                scenario = SCENARIOS[name]
                total = count_points(scenario, manifest, work)
                if total == 0:
                    raise SystemExit(f"{name}: the command passed no step boundary; nothing to kill")
                points = sample(total, ns.max_points) if ns.max_points else list(range(1, total + 1))
                results = [run_point(scenario, manifest, work, p, s) for s in ns.signals.split(",") for p in points]
            for o in results:
                if not (o.intact and o.clean):
                    print(f"  {o.scenario} point {o.point} SIG{o.signal}: {'; '.join(o.problems)}", flush=True)
            print(f"{name}: {summary(results)}", flush=True)
            outcomes += results
    print(f"all: {summary(outcomes)}")
    if not all(o.intact and o.clean for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
