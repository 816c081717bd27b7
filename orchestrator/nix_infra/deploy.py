"""The deploy pipeline: build every system once, copy in parallel, activate in
health-gated waves with magic rollback.

  build     one `nix build` of every target's system, on this machine
  copy      `nix copy --to ssh-ng://` to each node, --parallel at a time, retried
  activate  by the manifest's waves: each ctrl node alone, then the rest in
            batches of --batch-size; a node already running its new system is
            left alone; each activation is confirmed over a fresh connection
  health    after each batch: reachable, `systemctl is-system-running` is
            running, the node type's key units are active (and the units a
            credential delivery restarted)

A node whose system is unchanged but whose credentials delivery changed
(first install: the units that load them failed at boot) joins its wave's
batch without an activation, so it goes through the health gate too.

A failure (copy, activation, health) stops the rollout: later batches are not
started and the failing node's log tail is shown.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nix_infra.activate import Activation, current_system_command, probe_command
from nix_infra.bootstrap import install
from nix_infra.delivery import DeliveryResult, check_node_names, check_unit_names
from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore
from nix_infra.manifest import Manifest, Node
from nix_infra.nix import NIX, build_argv, copied_paths, copy_argv, parse_build_output
from nix_infra.process import run
from nix_infra.ssh import SshTarget, nix_sshopts, run_remote, run_remote_commands

Events = Callable[[dict[str, Any]], None]

# Units that must be active after a switch, by node type (what node_types/ enable);
# key_units() adds the mesh proxy where the node consumes groups, and its apps' units.
KEY_UNITS: dict[str, tuple[str, ...]] = {
    "ctrl": ("sshd.service", "etcd.service", "flannel.service"),
    "worker": ("sshd.service", "flannel.service"),
    "service": ("sshd.service", "flannel.service"),
    "ingress": ("sshd.service", "flannel.service", "nginx.service"),
    "registry": ("sshd.service", "flannel.service", "docker-registry.service", "nix-serve.service"),
}
MESH_UNITS = ("nix-infra-mesh-haproxy.service", "nix-infra-confd.service")


def key_units(manifest: Manifest, node: Node) -> tuple[str, ...]:
    """The units the health gate checks on a node: its type's, the mesh proxy's, its apps' and their registrations."""
    units = list(KEY_UNITS.get(node.type, ()))
    if node.consumes:
        units += MESH_UNITS
    apps = manifest.raw.get("apps", {})
    for app in node.apps:
        unit = apps.get(app, {}).get("unit") if isinstance(apps.get(app), dict) else None
        if unit:
            units.append(unit)
        units.append(f"nix-infra-register-{app}.service")
    return tuple(dict.fromkeys(units))


@dataclass(frozen=True)
class DeployOptions:
    flake: str
    parallel: int = 10
    batch_size: int | None = None  # default: --parallel
    confirm_timeout: int = 30
    activation_timeout: float = 240.0
    health_timeout: float = 60.0
    substitute_on_destination: bool = False
    copy_attempts: int = 3
    poll_interval: float = 0.5
    reboot_timeout: float = 600.0  # after installing NixOS, how long a node may take to come back


@dataclass(frozen=True)
class NodeOutcome:
    node: str
    result: str  # unchanged | switched | failed | rolled-back | unhealthy | copy-failed | not-started
    old_system: str | None = None
    new_system: str | None = None
    paths_copied: int = 0
    detail: str = ""
    seconds: float = 0.0
    bytes_copied: int = 0

    @property
    def ok(self) -> bool:
        return self.result in ("unchanged", "switched")

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "result": self.result,
            "old_system": self.old_system,
            "new_system": self.new_system,
            "paths_copied": self.paths_copied,
            "bytes_copied": self.bytes_copied,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class SshSettings:
    """How the orchestrator reaches nodes: identity and port (22 on Hetzner)."""

    identity: Path | None = None
    port: int = 22
    connect_timeout: int = 10


def ssh_target(node: Node, facts: FactsStore, settings: SshSettings) -> SshTarget:
    known = facts.read(node.name)
    if known is None or known.public_ipv4 is None:
        raise NixInfraError(
            f"{node.name}: no facts/{node.name}.json, so its address and host key are unknown. Run `provision` "
            f"first; if the server exists without facts (an answer was lost, or facts/ was not kept), "
            f"`destroy {node.name}` and provision again."
        )
    return SshTarget(
        node=node.name,
        host=known.public_ipv4,
        port=known.ssh_port,
        known_hosts=facts.known_hosts,
        identity=settings.identity,
    )


def batches(manifest: Manifest, chosen: Sequence[Node], batch_size: int) -> list[list[str]]:
    """The manifest's waves restricted to the chosen nodes, the last ones cut into batches."""
    names = {n.name for n in chosen}
    out: list[list[str]] = []
    for wave in manifest.waves:
        members = [n for n in wave if n in names]
        if not members:
            continue
        if all(manifest.nodes[n].type == "ctrl" for n in members):
            out += [[n] for n in members]
        else:
            out += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return out


@dataclass
class Deployer:
    manifest: Manifest
    facts: FactsStore
    ssh: SshSettings
    options: DeployOptions
    events: Events = field(default=lambda e: None)
    # Runs once the ctrl nodes are done (before the first batch of other nodes, or at
    # the end): seeds etcd's static mesh keys. Raises NixInfraError on failure.
    seeder: Callable[[], None] | None = None
    seed_error: str | None = None
    # Delivers a node's credentials (before anything is activated), given the ones it holds
    # now (from the probe); returns what it did, or None when there was nothing to do.
    deliverer: Callable[[str, list[str]], DeliveryResult | None] | None = None
    held_credentials: dict[str, list[str]] = field(default_factory=dict)
    delivered: dict[str, DeliveryResult] = field(default_factory=dict)

    def emit(self, event: str, node: str | None = None, **data: Any) -> None:
        self.events({"event": event, "node": node, "time": round(time.time(), 3), **data})

    # ---- build and copy ----------------------------------------------------------------------
    def build(self, nodes: Sequence[Node]) -> dict[str, str]:
        self.emit("phase", phase="build", nodes=[n.name for n in nodes])
        argv = build_argv(self.options.flake, [n.system for n in nodes])
        result = run(argv, what=f"building {len(nodes)} system(s)")
        paths = parse_build_output(result.stdout, len(nodes))
        return {n.name: p for n, p in zip(nodes, paths, strict=True)}

    def copy(self, target: SshTarget, path: str) -> tuple[int, int]:
        """Copy a system's closure to a node; returns (paths copied, their NAR bytes)."""
        env = {**os.environ, "NIX_SSHOPTS": nix_sshopts(target)}
        argv = copy_argv(path, target, substitute_on_destination=self.options.substitute_on_destination)
        last = ""
        for attempt in range(1, self.options.copy_attempts + 1):
            self.emit("phase", target.node, phase="copy", attempt=attempt)
            result = run(argv, env=env, check=False, what=f"{target.node}: nix copy")
            if result.returncode == 0:
                paths = copied_paths(result.stderr)
                size = nar_size(paths)
                self.emit("copied", target.node, paths=len(paths), bytes=size)
                return len(paths), size
            last = "\n".join(result.stderr.strip().splitlines()[-5:])
            self.emit("retry", target.node, phase="copy", attempt=attempt, error=last)
            time.sleep(min(2.0**attempt * 0.25, 5.0))
        raise NixInfraError(f"{target.node}: copying the system failed {self.options.copy_attempts} times:\n{last}")

    # ---- activation --------------------------------------------------------------------------
    def _watch(
        self, target: SshTarget, act: Activation, states: tuple[str, ...], timeout: float, *, confirm: bool = False
    ) -> str | None:
        """Wait for one of `states`, watching on the node; reconnect when the connection drops."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            remaining = max(1, int(deadline - time.monotonic()))
            result = run_remote(
                target, act.watch_command(states, remaining, confirm=confirm), check=False, timeout=remaining + 30
            )
            status = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
            if result.returncode == 0 and status in states:
                return status
            time.sleep(self.options.poll_interval)
        return None

    def activate(self, target: SshTarget, new: str, old: str | None = None) -> NodeOutcome:
        start = time.monotonic()
        act = Activation(target.node, new, f"{int(time.time())}-{secrets.token_hex(4)}", self.options.confirm_timeout)
        self.emit("phase", target.node, phase="activate", token=act.token)
        started = ("waiting", "failed", "confirmed", "rolled-back")
        # start the transient unit and watch it in the same connection (one round trip);
        # if that connection drops (the switch restarted the network), _watch reconnects
        first = run_remote_commands(
            target,
            act.start_command(),
            act.watch_command(started, int(self.options.activation_timeout)),
            timeout=self.options.activation_timeout + 60,
            check=False,
        )
        status: str | None = first.stdout.strip().splitlines()[-1] if first.stdout.strip() else ""
        if status not in started:
            if first.returncode not in (1, 255):  # 1: the watch timed out; 255: the connection dropped
                raise NixInfraError(
                    f"{target.node}: starting the activation failed (exit {first.returncode}): {first.stderr.strip()}"
                )
            status = self._watch(target, act, started, self.options.activation_timeout)
        if status == "waiting":
            # the confirmation travels over a fresh connection: if the new system broke
            # networking or SSH, it never arrives and the node reverts by itself
            self.emit("phase", target.node, phase="confirm")
            status = self._watch(
                target, act, ("confirmed", "rolled-back"), self.options.confirm_timeout + 30, confirm=True
            )
        seconds = time.monotonic() - start
        if status == "confirmed":
            self.emit("switched", target.node, system=new)
            return NodeOutcome(target.node, "switched", old, new, seconds=seconds)
        tail = run_remote(target, act.log_command(), check=False, timeout=30).stdout.strip()
        result = status if status in ("failed", "rolled-back") else "failed"
        detail = tail or ("activation did not report back in time" if status is None else "")
        self.emit("failed", target.node, result=result, log=tail)
        return NodeOutcome(target.node, result, old, new, detail=detail, seconds=seconds)

    # ---- health ------------------------------------------------------------------------------
    def healthy(self, target: SshTarget, node: Node, extra: Sequence[str] = ()) -> str | None:
        """None when healthy, else why not (after retrying until the health timeout). `extra`:
        units to check besides the key units (those a credential delivery restarted)."""
        units = check_unit_names(
            dict.fromkeys([*key_units(self.manifest, node), *extra]), f"health check of {node.name}"
        )
        check = [
            "/bin/sh", "-c", 'systemctl is-system-running; echo "--"; systemctl is-active -- "$@"', "health", *units,
        ]  # fmt: skip
        deadline = time.monotonic() + self.options.health_timeout
        while True:
            result = run_remote(target, check, check=False, timeout=30)
            state, _, active = result.stdout.partition("--")
            system_state = state.strip()
            if result.returncode == 255:
                why = f"unreachable: {result.stderr.strip()}"
            elif system_state != "running":
                why = f"system is {system_state or 'unknown'}"
            else:
                failed = [u for u, s in zip(units, active.split(), strict=False) if s != "active"]
                if not failed and len(active.split()) == len(units):
                    self.emit("healthy", node.name, units=list(units))
                    return None
                why = f"units not active: {', '.join(failed) or active.strip()}"
            if system_state == "degraded" or time.monotonic() >= deadline:
                return why
            time.sleep(self.options.poll_interval)

    # ---- the whole rollout -------------------------------------------------------------------
    def _installed(self, node: Node) -> bool:
        known = self.facts.read(node.name)
        return known is not None and known.installed

    def bootstrap(self, fresh: Sequence[Node], targets: dict[str, SshTarget]) -> None:
        """Install NixOS on servers that still run the stock image (in parallel)."""
        if not fresh:
            return

        def one(node: Node) -> str | None:
            self.emit("phase", node.name, phase="install")
            try:
                install(
                    self.options.flake,
                    node.name,
                    targets[node.name],
                    self.facts,
                    reboot_timeout=self.options.reboot_timeout,
                )
            except NixInfraError as exc:
                return exc.message
            self.emit("installed", node.name)
            return None

        with ThreadPoolExecutor(max_workers=max(1, self.options.parallel)) as pool:
            errors = [e for e in pool.map(one, fresh) if e]
        if errors:
            raise NixInfraError("\n".join(errors) + "\ninstalling NixOS failed; nothing was deployed")

    def probe(self, targets: dict[str, SshTarget]) -> dict[str, str | None]:
        """What every node runs now, and which credentials it holds (one round trip each, in
        parallel); unreachable nodes are an error."""

        def one(target: SshTarget) -> tuple[str, str | None, list[str], str]:
            result = run_remote(target, probe_command(), check=False, timeout=30)
            lines = result.stdout.strip().splitlines()
            creds = sorted(line.removesuffix(".cred") for line in lines[1:] if line.endswith(".cred"))
            err = result.stderr.strip() if result.returncode else ""
            return target.node, (lines[0].strip() or None) if lines else None, creds, err

        with ThreadPoolExecutor(max_workers=max(1, self.options.parallel)) as pool:
            found = list(pool.map(one, targets.values()))
        errors = [
            f"{node}: unreachable: {err.splitlines()[-1] if err else 'no answer'}" for node, _, _, err in found if err
        ]
        if errors:
            raise NixInfraError("\n".join(errors) + "\nnothing was copied or activated")
        self.held_credentials = {node: creds for node, _, creds, _ in found}
        return {node: current for node, current, _, _ in found}

    def check(self, nodes: Sequence[Node]) -> None:
        """What reaches a node as a name is checked before anything is touched: the units the
        health gate asks about and the units and names of the credentials."""
        for node in nodes:
            check_unit_names(key_units(self.manifest, node), f"manifest: nodes.{node.name} (its key units)")
            if self.deliverer is not None:
                check_node_names(node, self.manifest)

    def run(self, nodes: Sequence[Node]) -> list[NodeOutcome]:
        if not nodes:
            raise NixInfraError("no nodes to deploy")
        self.check(nodes)
        targets = {n.name: ssh_target(n, self.facts, self.ssh) for n in nodes}
        self.bootstrap([n for n in nodes if not self._installed(n)], targets)
        systems = self.build(nodes)
        current = self.probe(targets)
        if self.deliverer is not None:
            self.deliver([n.name for n in nodes])
        changed = [n.name for n in nodes if current[n.name] != systems[n.name]]
        copied: dict[str, tuple[int, int]] = dict.fromkeys(targets, (0, 0))
        with ThreadPoolExecutor(max_workers=max(1, self.options.parallel)) as pool:
            futures = {name: pool.submit(self.copy, targets[name], systems[name]) for name in changed}
            errors = []
            for name, fut in futures.items():
                try:
                    copied[name] = fut.result()
                except NixInfraError as exc:
                    errors.append(exc.message)
        if errors:
            raise NixInfraError("\n".join(errors) + "\nnothing was activated")

        outcomes: dict[str, NodeOutcome] = {}
        touched = {name for name, r in self.delivered.items() if r.touched}
        for n in nodes:
            if n.name not in changed:
                self.emit("unchanged", n.name)
                r = self.delivered.get(n.name)
                detail = r.summary() if r is not None and r.touched else ""
                outcomes[n.name] = NodeOutcome(n.name, "unchanged", current[n.name], systems[n.name], detail=detail)
        # a node delivery touched is health-gated in its wave even when its system is unchanged
        plan = batches(
            self.manifest,
            [n for n in nodes if n.name in changed or n.name in touched],
            self.options.batch_size or self.options.parallel,
        )
        stopped = False
        seeded = self.seeder is None
        for batch in plan:
            if not stopped and not seeded and not all(self.manifest.nodes[n].type == "ctrl" for n in batch):
                stopped = not self._seed()
                seeded = True
            if stopped:
                for name in batch:
                    outcomes[name] = NodeOutcome(
                        name, "not-started", current[name], systems[name], copied[name][0], bytes_copied=copied[name][1]
                    )
                continue
            self.emit("batch", nodes=batch)
            switching = [name for name in batch if name in changed]
            with ThreadPoolExecutor(max_workers=max(1, self.options.parallel)) as pool:
                results = list(
                    pool.map(lambda name: self.activate(targets[name], systems[name], current[name]), switching)
                )
            for outcome in results:
                outcomes[outcome.node] = _with_copied(outcome, copied[outcome.node])
            if all(o.ok for o in results):
                with ThreadPoolExecutor(max_workers=max(1, self.options.parallel)) as pool:
                    checks = list(pool.map(lambda name: (name, self._healthy(targets[name], name)), batch))
                for name, why in checks:
                    if why is not None:
                        o = outcomes[name]
                        outcomes[name] = NodeOutcome(
                            name,
                            "unhealthy",
                            o.old_system,
                            o.new_system,
                            o.paths_copied,
                            why,
                            o.seconds,
                            o.bytes_copied,
                        )
                        self.emit("unhealthy", name, reason=why)
            if not all(outcomes[n].ok for n in batch):
                stopped = True
        if not stopped and not seeded:
            self._seed()
        return [outcomes[n.name] for n in nodes]

    def _healthy(self, target: SshTarget, name: str) -> str | None:
        r = self.delivered.get(name)
        return self.healthy(target, self.manifest.nodes[name], r.units if r is not None else ())

    def deliver(self, names: Sequence[str]) -> None:
        """Credentials to every target, in parallel; any failure stops the deploy before activation."""
        assert self.deliverer is not None
        deliverer = self.deliverer

        def one(name: str) -> str | None:
            try:
                result = deliverer(name, self.held_credentials.get(name, []))
            except NixInfraError as exc:
                return exc.message
            if result is not None:
                self.delivered[name] = result
                self.emit("credentials", name, summary=result.summary())
                if result.message:
                    self.emit("restart-failed", name, units=list(result.restart_failed), log=result.message)
            return None

        with ThreadPoolExecutor(max_workers=max(1, self.options.parallel)) as pool:
            errors = [e for e in pool.map(one, names) if e]
        if errors:
            raise NixInfraError("\n".join(errors) + "\nnothing was activated")

    def _seed(self) -> bool:
        """Seed etcd; False (and an event) when it failed, which stops the rollout."""
        assert self.seeder is not None
        self.emit("phase", phase="seed")
        try:
            self.seeder()
        except NixInfraError as exc:
            self.emit("failed", result="seed-failed", log=exc.message)
            self.seed_error = exc.message
            return False
        return True

    def rollback(self, nodes: Sequence[Node]) -> list[NodeOutcome]:
        """Activate each node's previous generation, with the same magic rollback."""
        outcomes = []
        for node in nodes:
            target = ssh_target(node, self.facts, self.ssh)
            listing = run_remote(target, ["/bin/sh", "-c", PREVIOUS_GENERATION], check=False, timeout=30)
            previous = listing.stdout.strip()
            if listing.returncode != 0 or not previous:
                outcomes.append(NodeOutcome(node.name, "failed", detail="no previous generation to roll back to"))
                continue
            current = run_remote(target, current_system_command(), check=False, timeout=30).stdout.strip()
            outcomes.append(self.activate(target, previous, current or None))
        return outcomes


# The system generation before the one the profile points at now.
PREVIOUS_GENERATION = (
    "cd /nix/var/nix/profiles && cur=$(readlink system | sed -n 's/^system-\\([0-9]*\\)-link$/\\1/p') && "
    "prev=$(ls -1 | sed -n 's/^system-\\([0-9]*\\)-link$/\\1/p' | sort -n | awk -v c=\"$cur\" '$1 < c' | tail -n 1) && "
    '[ -n "$prev" ] && readlink -f "system-$prev-link"'
)


def _with_copied(o: NodeOutcome, copied: tuple[int, int]) -> NodeOutcome:
    return NodeOutcome(o.node, o.result, o.old_system, o.new_system, copied[0], o.detail, o.seconds, copied[1])


def nar_size(paths: Sequence[str]) -> int:
    """Total NAR size of store paths in the local store (0 when there are none)."""
    if not paths:
        return 0
    result = run([*NIX, "path-info", "--json", *paths], check=False, what="measuring copied paths")
    try:
        return sum(int(info.get("narSize", 0)) for info in json.loads(result.stdout))
    except (ValueError, TypeError, AttributeError):
        return 0


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def generation_name(path: str | None) -> str:
    """A store path as people read it: its hash prefix and name."""
    if not path:
        return "-"
    base = path.rsplit("/", 1)[-1]
    return f"{base[:8]}..{base[33:]}" if len(base) > 33 else base


def summary_rows(outcomes: Iterable[NodeOutcome]) -> list[list[str]]:
    return [
        [
            o.node,
            generation_name(o.old_system),
            generation_name(o.new_system),
            f"{o.paths_copied} ({human_size(o.bytes_copied)})" if o.paths_copied else "0",
            o.result,
            o.detail.splitlines()[-1] if o.detail else "",
        ]
        for o in outcomes
    ]
