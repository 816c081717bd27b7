"""Day-two operations over SSH: status of every node, a command everywhere."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from nix_infra.deploy import SshSettings, generation_name, ssh_target
from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore
from nix_infra.manifest import Node
from nix_infra.nix import NIX
from nix_infra.process import Result, run
from nix_infra.ssh import run_remote

# One round trip per node: what it runs, how systemd is, which units failed.
STATUS_SCRIPT = (
    'echo "running=$(readlink -f /run/current-system)"; '
    'echo "state=$(systemctl is-system-running)"; '
    'systemctl list-units --failed --no-legend --plain | while read -r unit rest; do echo "failed=$unit"; done'
)


def desired_systems(flake: str, nodes: Sequence[Node]) -> dict[str, str]:
    """The store path each node should run, by evaluation only (nothing is built)."""
    attrs = {n.name: n.system for n in nodes}
    expr = "cs: builtins.mapAttrs (n: c: c.config.system.build.toplevel.outPath) cs"
    result = run(
        [*NIX, "eval", "--json", f"{flake}#nixosConfigurations", "--apply", expr], what="evaluating the desired systems"
    )
    try:
        paths: dict[str, str] = json.loads(result.stdout)
    except ValueError as exc:
        raise NixInfraError("nix eval of the desired systems did not print JSON") from exc
    return {
        name: paths[attr.removeprefix("nixosConfigurations.")]
        for name, attr in attrs.items()
        if attr.removeprefix("nixosConfigurations.") in paths
    }


@dataclass(frozen=True)
class NodeStatus:
    node: str
    reachable: bool
    system_state: str
    running: str | None
    desired: str | None
    failed_units: tuple[str, ...]
    error: str = ""

    @property
    def ok(self) -> bool:
        up_to_date = self.desired is None or self.running == self.desired
        return self.reachable and self.system_state == "running" and not self.failed_units and up_to_date

    @property
    def running_summary(self) -> str:
        if not self.reachable:
            return "-"
        name = generation_name(self.running)
        if self.desired is None:
            return name
        return f"{name} (desired)" if self.running == self.desired else f"{name} != {generation_name(self.desired)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "reachable": self.reachable,
            "system_state": self.system_state,
            "running": self.running,
            "desired": self.desired,
            "failed_units": list(self.failed_units),
            "ok": self.ok,
            "error": self.error,
        }


@contextlib.contextmanager
def _ending_sessions_on_interrupt() -> Iterator[None]:
    """Ctrl-C while commands run on nodes (in threads, over the run's SSH sessions): close the
    sessions, so every command ends at once as with a dropped connection, and the pool's threads
    with it (the pool waits for them before the interrupt reaches the user)."""
    try:
        yield
    except KeyboardInterrupt:
        from nix_infra.session import SESSIONS

        SESSIONS.close_all()
        raise


def node_status(
    nodes: Sequence[Node], facts: FactsStore, settings: SshSettings, desired: dict[str, str], parallel: int = 10
) -> list[NodeStatus]:
    def one(node: Node) -> NodeStatus:
        target = ssh_target(node, facts, settings)
        result = run_remote(target, ["/bin/sh", "-c", STATUS_SCRIPT], check=False, timeout=60)
        if result.returncode == 255:
            return NodeStatus(
                node.name,
                False,
                "unreachable",
                None,
                desired.get(node.name),
                (),
                result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "",
            )
        values: dict[str, list[str]] = {}
        for line in result.stdout.splitlines():
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
        return NodeStatus(
            node=node.name,
            reachable=True,
            system_state=(values.get("state") or ["unknown"])[0] or "unknown",
            running=(values.get("running") or [""])[0] or None,
            desired=desired.get(node.name),
            failed_units=tuple(values.get("failed", [])),
        )

    with ThreadPoolExecutor(max_workers=parallel) as pool, _ending_sessions_on_interrupt():
        return list(pool.map(one, nodes))


def run_everywhere(
    nodes: Sequence[Node], facts: FactsStore, settings: SshSettings, command: list[str], parallel: int = 10
) -> list[tuple[str, Result]]:
    """Run `command` on every node at once; every exit code is kept for the caller to check."""
    targets = [(n.name, ssh_target(n, facts, settings)) for n in nodes]
    with ThreadPoolExecutor(max_workers=parallel) as pool, _ending_sessions_on_interrupt():
        results = list(pool.map(lambda t: run_remote(t[1], command, check=False, timeout=3600), targets))
    return [(name, result) for (name, _), result in zip(targets, results, strict=True)]
