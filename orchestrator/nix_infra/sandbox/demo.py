"""`nix-infra sandbox demo`: the whole job, end to end, in a new cluster repo on this machine."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyrage import x25519

from nix_infra.errors import NixInfraError
from nix_infra.sandbox.control import check_path, nix_infra_root, set_fault
from nix_infra.sandbox.state import SandboxPaths

Say = Callable[[str], None]


@dataclass
class DemoResult:
    directory: Path
    steps: list[tuple[str, int]] = field(default_factory=list)
    failed_node: str | None = None
    seconds: float = 0.0


def _template_repo(directory: Path, say: Say) -> tuple[Path, Path, str]:
    """The template, with a generated SSH key and age identity in place of its placeholders."""
    template = nix_infra_root() / "templates" / "cluster"
    shutil.copytree(template, directory, dirs_exist_ok=True)
    ssh_key = directory / "operator_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nix-infra-demo", "-f", str(ssh_key)], check=True
    )
    public_ssh = (directory / "operator_ed25519.pub").read_text().strip()
    secret = x25519.Identity.generate()
    identity = directory / "identity.txt"
    fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# nix-infra sandbox demo\n# public key: {secret.to_public()}\n{secret}\n")
    spec_path = directory / "cluster.nix"
    spec = spec_path.read_text()
    spec = re.sub(r"sshKeys = \[[^\]]*\];", f'sshKeys = [ "{public_ssh}" ];', spec, count=1)
    spec = re.sub(r"adminCidrs = \[[^\]]*\];", 'adminCidrs = [ "127.0.0.0/8" ];', spec, count=1)
    spec_path.write_text(spec)
    (directory / ".gitignore").write_text(".env\n.nix-infra/\nidentity.txt\noperator_ed25519\n")
    say(
        f"a cluster repo from the template in {directory}: cluster.nix with a generated SSH key "
        "(operator_ed25519) and age identity (identity.txt)"
    )
    name = subprocess.run(
        ["nix-instantiate", "--eval", "--json", "--expr", "(import ./cluster.nix).name"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ssh_key, identity, json.loads(name)


def demo(directory: Path, say: Say, python: str = sys.executable) -> DemoResult:
    """Run the demo in `directory` (new or empty); the sandbox stays up for exploring."""
    start = time.monotonic()
    directory = directory.resolve()
    check_path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise NixInfraError(
            f"{directory} exists and is not empty: the demo makes a new cluster repo; name another DIRECTORY "
            "(an earlier demo's sandbox there stops with `nix-infra sandbox down` in it)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NixInfraError(f"{directory}: cannot create the demo's directory ({exc.strerror})") from None
    result = DemoResult(directory)
    ssh_key, identity, cluster = _template_repo(directory, say)
    env = {**os.environ, "NIX_INFRA_IDENTITY": str(identity)}

    def run(title: str, args: list[str], expect: tuple[int, ...] = (0,), stdin: bytes | None = None) -> str:
        say("")
        say(f"── {title}")
        say(f"$ nix-infra {' '.join(args)}")
        proc = subprocess.run(
            [python, "-m", "nix_infra", *args],
            cwd=directory,
            env=env,
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=None,  # live progress goes straight to the terminal
        )
        out = proc.stdout.decode(errors="replace")
        if out and args[0] != "--json":
            sys.stdout.write(out)
            sys.stdout.flush()
        result.steps.append((" ".join(args), proc.returncode))
        if proc.returncode not in expect:
            raise NixInfraError(
                f"demo step `nix-infra {' '.join(args)}` exited {proc.returncode} (expected {expect}); "
                f"the repo and its sandbox are in {directory} (`nix-infra sandbox down` there stops it)"
            )
        return out

    run(
        "the cluster's state: recipients, facts/, the cluster CA",
        [
            "init",
            "--cluster",
            cluster,
            "--recipient",
            str(
                x25519.Identity.from_str(
                    next(line for line in identity.read_text().splitlines() if line.startswith("AGE-"))
                ).to_public()
            ),
        ],
    )
    run(
        "start the sandbox: a fake Hetzner API, a local server per created server, etcd with the cluster's PKI",
        ["--ssh-key", str(ssh_key), "sandbox", "up"],
    )
    manifest = json.loads(run("what Nix derived from cluster.nix", ["--json", "manifest"]))
    for name in manifest.get("secrets", {}):
        run(
            f"a generated value for secret {name} (from stdin: never on disk in the clear, never in argv)",
            ["secret", "set", name],
            stdin=secrets.token_urlsafe(24).encode(),
        )
    run("what provision would create (exit 2: something would change)", ["plan"], expect=(2,))
    run("create the servers, network, firewalls, placement groups", ["--yes", "provision"])
    run(
        "deploy: install, build, copy, activate with magic rollback, in waves, health-gated, "
        "credentials delivered, etcd seeded through an SSH tunnel",
        ["--yes", "deploy"],
    )
    run("every node: reachable, running what it should", ["status"])
    run("the control plane, through an SSH tunnel to the ctrl node", ["etcd", "get", "/cluster/nodes"])
    nodes = manifest.get("nodes", {})
    victim = next((n for n, v in sorted(nodes.items()) if v.get("type") != "ctrl"), None)
    if victim is not None:
        paths = SandboxPaths(directory)
        set_fault(paths, {victim: "fail-activation"})
        say("")
        say(
            f"── a sandbox fault: {victim}'s next system fails its activation "
            f"(.nix-infra/sandbox/flake/faults.nix); the node must roll back by itself"
        )
        run(f"a second deploy: {victim} fails and rolls back", ["--yes", "deploy", "--no-provision"], expect=(1,))
        result.failed_node = victim
        set_fault(paths, {})
        run(f"{victim} runs its previous system again (the fault removed, that is its desired system)", ["status"])
    result.seconds = time.monotonic() - start
    cli = invocation()
    say("")
    say(f"demo done in {result.seconds:.0f} s. The sandbox still runs; explore it:")
    say(f"  cd {directory}")
    say(f"  {cli} status                     # every node")
    say(f"  {cli} ssh {victim or 'ctrl001'} -- ls /run/fake   # a shell on a node (its own Nix store)")
    say(f"  {cli} cmd -t @worker -- uptime   # a command on many nodes")
    say(f"  {cli} etcd get /cluster          # the control plane")
    say(f"  {cli} sandbox status             # pids, ports, servers")
    say(f"  $EDITOR cluster.nix && {cli} --yes deploy   # change a node, deploy again")
    say("Stop it (nothing is left running or on disk but the repo itself):")
    say(f"  cd {directory} && {cli} sandbox down")
    return result


def invocation() -> str:
    """How to call nix-infra from anywhere: its name when it is on PATH, else this install's script."""
    script = Path(sys.prefix) / "bin" / "nix-infra"
    found = shutil.which("nix-infra")
    if found and Path(found).resolve() == script.resolve():
        return "nix-infra"
    return str(script) if script.exists() else f"{sys.executable} -m nix_infra"
