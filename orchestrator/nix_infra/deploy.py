"""The deploy pipeline: build every system once, copy in parallel, activate in
health-gated waves with magic rollback.

  build     one `nix build` of every target's system, on this machine; a node
            whose sources are unchanged since its last successful deploy is
            not evaluated or built (deploycache.py), only probed
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

import contextlib
import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nix_infra.activate import STORE_PATH, Activation, Pending, parse_pending, probe_command
from nix_infra.bootstrap import clean_stale_secret_dirs, install
from nix_infra.delivery import DeliveryResult, check_node_names, check_unit_names
from nix_infra.deploycache import CacheUse
from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore
from nix_infra.manifest import Manifest, Node
from nix_infra.nix import NIX, build_argv, copied_paths, copy_argv, parse_build_output
from nix_infra.process import run
from nix_infra.ssh import (
    SshTarget,
    nix_sshopts,
    renew_session,
    run_remote,
    run_remote_commands,
    ssh_config_file,
)

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
        connect_timeout=settings.connect_timeout,
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
    # Ctrl-C: set once; every loop and every worker stops at its next look
    cancel: threading.Event = field(default_factory=threading.Event)
    # what each node is doing now that it would go on doing by itself if this run stopped
    inflight: dict[str, str] = field(default_factory=dict)
    # the no-op cache (deploycache.py): None evaluates and builds every node
    cache: CacheUse | None = None
    # set when the sources changed while Nix read them: this run records nothing
    recording: bool = True

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Interrupted()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Ctrl-C (SIGINT) stops the run within a second or two: every command this run started
        is ended, the workers stop at their next look, and the error says what each node is
        still doing by itself (exit 130). Only in the main thread (where signals arrive)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        before = _descendants(os.getpid(), frozenset())
        stop = threading.Event()

        def sweep() -> None:
            while not stop.is_set():
                for pid in _descendants(os.getpid(), before):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGTERM)
                # and the SSH sessions (in process): a command on one ends as if the connection dropped
                sessions = sys.modules.get("nix_infra.session")
                if sessions is not None:
                    sessions.SESSIONS.close_all()
                stop.wait(0.1)

        def on_sigint(signum: int, frame: object) -> None:
            if not self.cancel.is_set():
                self.cancel.set()
                threading.Thread(target=sweep, name="nix-infra-interrupt", daemon=True).start()
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        except (KeyboardInterrupt, Interrupted):
            self.cancel.set()
            raise NixInfraError(self.interrupted_message(), exit_code=130) from None
        finally:
            stop.set()
            signal.signal(signal.SIGINT, previous)

    def interrupted_message(self) -> str:
        lines = ["interrupted."]
        if self.inflight:
            lines.append("Still in progress, and what each node does by itself:")
            lines += [f"  {node}: {what}" for node, what in sorted(self.inflight.items())]
        else:
            lines.append("Nothing is in progress on any node.")
        lines.append("Run deploy again to finish: it confirms or waits for pending activations.")
        return "\n".join(lines)

    def emit(self, event: str, node: str | None = None, **data: Any) -> None:
        self.events({"event": event, "node": node, "time": round(time.time(), 3), **data})

    # ---- build and copy ----------------------------------------------------------------------
    def build(self, nodes: Sequence[Node]) -> dict[str, str]:
        self.emit("phase", phase="build", nodes=[n.name for n in nodes])
        argv = build_argv(self.options.flake, [n.system for n in nodes])
        result = run(argv, what=f"building {len(nodes)} system(s)", stream="nix build")
        paths = parse_build_output(result.stdout, len(nodes))
        return {n.name: p for n, p in zip(nodes, paths, strict=True)}

    def copy(self, target: SshTarget, path: str) -> tuple[int, int]:
        """Copy a system's closure to a node; returns (paths copied, their NAR bytes)."""
        with ssh_config_file(target) as config:
            return self._copy(target, path, {**os.environ, "NIX_SSHOPTS": nix_sshopts(config)})

    def _copy(self, target: SshTarget, path: str, env: dict[str, str]) -> tuple[int, int]:
        argv = copy_argv(path, target, substitute_on_destination=self.options.substitute_on_destination)
        last = ""
        for attempt in range(1, self.options.copy_attempts + 1):
            self._check_cancel()
            self.emit("phase", target.node, phase="copy", attempt=attempt)
            self.inflight[target.node] = "copying its new system was interrupted; nothing was activated there"
            result = run(argv, env=env, check=False, what=f"{target.node}: nix copy", stream=f"{target.node}: nix copy")
            self._check_cancel()
            del self.inflight[target.node]
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
            self._check_cancel()
            remaining = max(1, int(deadline - time.monotonic()))
            result = run_remote(
                target, act.watch_command(states, remaining, confirm=confirm), check=False, timeout=remaining + 30
            )
            status = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
            if result.returncode == 0 and status in states:
                return status
            self._check_cancel()
            time.sleep(self.options.poll_interval)
        return None

    def activate(
        self, target: SshTarget, new: str, old: str | None = None, *, generation: int | None = None
    ) -> NodeOutcome:
        self._check_cancel()
        start = time.monotonic()
        act = Activation(
            target.node,
            new,
            f"{int(time.time())}-{secrets.token_hex(4)}",
            self.options.confirm_timeout,
            generation,
        )
        self.emit("phase", target.node, phase="activate", token=act.token)
        self.inflight[target.node] = (
            f"activation {act.token} of {generation_name(new)} was started and is not confirmed; without a "
            f"confirmation the node goes back to {generation_name(old)} by itself "
            f"{self.options.confirm_timeout} s after its switch"
        )
        try:
            return self._activate(target, act, old, start)
        finally:
            if not self.cancel.is_set():
                self.inflight.pop(target.node, None)

    def _activate(self, target: SshTarget, act: Activation, old: str | None, start: float) -> NodeOutcome:
        new = act.system
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
        self._check_cancel()
        status: str | None = first.stdout.strip().splitlines()[-1] if first.stdout.strip() else ""
        if status not in started:
            if first.returncode not in (1, 255):  # 1: the watch timed out; 255: the connection dropped
                raise NixInfraError(
                    f"{target.node}: starting the activation failed (exit {first.returncode}): {first.stderr.strip()}"
                )
            status = self._watch(target, act, started, self.options.activation_timeout)
        if status == "waiting":
            # the confirmation travels over a fresh connection: if the new system broke
            # networking or SSH, it never arrives and the node reverts by itself (the health
            # gate and later watches reuse that new one)
            renew_session(target)
            self.emit("phase", target.node, phase="confirm")
            self.inflight[target.node] = (
                f"the confirmation of activation {act.token} was being sent: the node keeps "
                f"{generation_name(new)} if it arrived, else goes back to {generation_name(old)} by itself "
                f"within {self.options.confirm_timeout} s"
            )
            status = self._watch(
                target, act, ("confirmed", "rolled-back"), self.options.confirm_timeout + 30, confirm=True
            )
        stop_error = ""
        if status is None:  # abandoned: stop the unit, whose shell then reverts (profile included)
            status, stop_error = self._abandon(target, act)
        seconds = time.monotonic() - start
        if status == "confirmed":
            self.emit("switched", target.node, system=new)
            return NodeOutcome(target.node, "switched", old, new, seconds=seconds)
        tail = run_remote(target, act.log_command(), check=False, timeout=30).stdout.strip()
        result = status if status in ("failed", "rolled-back") else "failed"
        detail = tail or ("activation did not report back in time" if status is None else "")
        if stop_error:
            detail += f"\nstopping {act.unit} failed: {stop_error}"
        self.emit("failed", target.node, result=result, log=tail)
        return NodeOutcome(target.node, result, old, new, detail=detail, seconds=seconds)

    def _abandon(self, target: SshTarget, act: Activation) -> tuple[str | None, str]:
        """Stop an activation that did not report back in time (`systemctl stop` of its unit: it
        reverts to what ran and puts the profile back); its final status, and why stopping failed."""
        self._check_cancel()
        self.emit("phase", target.node, phase="abandon", token=act.token)
        stopped = run_remote(target, ["systemctl", "stop", "--", act.unit], check=False, timeout=120)
        error = "" if stopped.returncode == 0 else (stopped.stderr.strip() or f"exit {stopped.returncode}")
        if stopped.returncode == 255:  # unreachable: it reverts by itself once its timeout passes
            return None, error
        status = self._watch(target, act, ("rolled-back", "failed", "confirmed"), self.options.confirm_timeout + 30)
        return status, error

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
            self._check_cancel()
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
            self._check_cancel()
            self.emit("phase", node.name, phase="install")
            self.inflight[node.name] = (
                "installing NixOS was interrupted; the next deploy finds out which host key answers "
                "(the bootstrap or the new one, both pinned) and resumes from there"
            )
            try:
                install(
                    self.options.flake,
                    node.name,
                    targets[node.name],
                    self.facts,
                    reboot_timeout=self.options.reboot_timeout,
                )
            except NixInfraError as exc:
                self._check_cancel()
                self.inflight.pop(node.name, None)
                return exc.message
            self._check_cancel()
            self.inflight.pop(node.name, None)
            self.emit("installed", node.name)
            return None

        with ThreadPoolExecutor(max_workers=max(1, self.options.parallel)) as pool:
            errors = [e for e in pool.map(one, fresh) if e]
        if errors:
            raise NixInfraError("\n".join(errors) + "\ninstalling NixOS failed; nothing was deployed")

    def probe(self, targets: dict[str, SshTarget], systems: dict[str, str] | None = None) -> dict[str, str | None]:
        """What every node runs now, and which credentials it holds (one round trip each, in
        parallel); unreachable nodes are an error. An activation still in progress on a node
        (an earlier run was stopped) is settled first: one of the system this run deploys that
        waits for its confirmation is confirmed; any other is waited for until it is confirmed
        or reverted. So what the probe reports is what the node keeps running."""

        def once(target: SshTarget) -> tuple[str | None, list[str], list[Pending], str]:
            self._check_cancel()
            result = run_remote(target, probe_command(), check=False, timeout=30)
            lines = result.stdout.strip().splitlines()
            creds = sorted(line.removesuffix(".cred") for line in lines[1:] if line.endswith(".cred"))
            err = result.stderr.strip() if result.returncode else ""
            current = lines[0].strip() if lines else ""
            return (current if STORE_PATH.fullmatch(current) else None), creds, parse_pending(lines[1:]), err

        def one(target: SshTarget) -> tuple[str, str | None, list[str], str]:
            for _ in range(3):
                current, creds, pending, err = once(target)
                if err or not pending:
                    return target.node, current, creds, err
                for p in pending:
                    self.settle(target, p, (systems or {}).get(target.node))
            return (
                target.node,
                current,
                creds,
                "activations still pending after waiting for them: " + ", ".join(p.token for p in pending),
            )

        with ThreadPoolExecutor(max_workers=max(1, self.options.parallel)) as pool:
            found = list(pool.map(one, targets.values()))
        errors = [
            f"{node}: unreachable: {err.splitlines()[-1] if err else 'no answer'}" for node, _, _, err in found if err
        ]
        if errors:
            raise NixInfraError("\n".join(errors) + "\nnothing was copied or activated")
        self.held_credentials = {node: creds for node, _, creds, _ in found}
        return {node: current for node, current, _, _ in found}

    def settle(self, target: SshTarget, pending: Pending, desired: str | None) -> str | None:
        """Confirm (it is the system this run wants) or wait out an activation an earlier run left
        in progress; returns its final status (None: it did not settle in time)."""
        act = Activation(target.node, pending.system, pending.token, self.options.confirm_timeout)
        final = ("confirmed", "rolled-back", "failed")
        self.emit("pending", target.node, token=pending.token, status=pending.status, system=pending.system)
        status: str | None = pending.status
        if status == "switching":
            status = self._watch(target, act, ("waiting", *final), self.options.activation_timeout)
        if status == "waiting":
            confirm = desired is not None and pending.system == desired
            status = self._watch(target, act, final, self.options.confirm_timeout + 30, confirm=confirm)
        self.emit("settled", target.node, token=pending.token, status=status or "unknown")
        return status

    def check(self, nodes: Sequence[Node]) -> None:
        """What reaches a node as a name is checked before anything is touched: the units the
        health gate asks about and the units and names of the credentials."""
        for node in nodes:
            check_unit_names(key_units(self.manifest, node), f"manifest: nodes.{node.name} (its key units)")
            if self.deliverer is not None:
                check_node_names(node, self.manifest)

    def run(self, nodes: Sequence[Node]) -> list[NodeOutcome]:
        with self.interruptible():
            return self._run(nodes)

    def _run(self, nodes: Sequence[Node]) -> list[NodeOutcome]:
        if not nodes:
            raise NixInfraError("no nodes to deploy")
        self.check(nodes)
        for stale in clean_stale_secret_dirs():  # a killed install's private host key, say
            self.emit("cleaned", path=str(stale))
        targets = {n.name: ssh_target(n, self.facts, self.ssh) for n in nodes}
        self.bootstrap([n for n in nodes if not self._installed(n)], targets)
        systems, current = self.systems(nodes, targets)
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
        # the probe saw these run their system, and no batch health-gates them: verified
        self.remember([outcomes[n.name] for n in nodes if n.name not in changed and n.name not in touched])
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
            self.remember([outcomes[n] for n in batch])  # confirmed and healthy ones
            if not all(outcomes[n].ok for n in batch):
                stopped = True
        if not stopped and not seeded:
            self._seed()
        return [outcomes[n.name] for n in nodes]

    def systems(
        self, nodes: Sequence[Node], targets: dict[str, SshTarget]
    ) -> tuple[dict[str, str], dict[str, str | None]]:
        """Each node's system (from the cache, else built) and what it runs now (the probe).

        A node whose cache entry matches (deploycache.py) is neither evaluated nor built: the
        probe (its one connection) checks that it still runs the recorded system; one that runs
        something else (rolled back, switched by hand) is built now and deployed as usual."""
        cached: dict[str, str] = {}
        if self.cache is not None:
            # keyed by the tree as Nix will read it: provisioning, the install and certificate
            # issuance (all before this) write facts/ and pki/ files into it
            self.cache = self.cache.again()
        if self.cache is not None:
            for n in nodes:
                hit = self.cache.store.lookup(n.name, self.cache.node_key(n.name, n.system))
                if hit is not None:
                    cached[n.name] = hit
            self.emit("cache", hits=sorted(cached), misses=sorted(n.name for n in nodes if n.name not in cached))
        missing = [n for n in nodes if n.name not in cached]
        systems = {**cached, **(self.build(missing) if missing else {})}
        current = self.probe(targets, systems)
        stale = [n for n in nodes if n.name in cached and current[n.name] != cached[n.name]]
        if stale:
            for n in stale:
                self.emit("cache-stale", n.name, recorded=cached[n.name], running=current[n.name])
            systems |= self.build(stale)
        if self.cache is not None and (missing or stale) and not self.cache.still_valid():
            self.recording = False
            self.emit("cache-skipped", reason="the flake's files changed while they were evaluated")
        return systems, current

    def remember(self, outcomes: Iterable[NodeOutcome]) -> None:
        """Record the system each verified node now runs (ok outcomes), keyed by this run's sources."""
        if self.cache is None or not self.recording:
            return
        self.cache.store.record(
            {
                o.node: (self.cache.node_key(o.node, self.manifest.nodes[o.node].system), o.new_system)
                for o in outcomes
                if o.ok and o.new_system is not None
            }
        )

    def _healthy(self, target: SshTarget, name: str) -> str | None:
        r = self.delivered.get(name)
        return self.healthy(target, self.manifest.nodes[name], r.units if r is not None else ())

    def deliver(self, names: Sequence[str]) -> None:
        """Credentials to every target, in parallel; any failure stops the deploy before activation."""
        assert self.deliverer is not None
        deliverer = self.deliverer

        def one(name: str) -> str | None:
            self._check_cancel()
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
        """Activate each node's previous generation, with the same magic rollback. The profile is
        switched to that generation (no new one is added), so a second rollback goes further back;
        generations an automatic revert rejected were deleted, so they are never picked."""
        with self.interruptible():
            outcomes = []
            for node in nodes:
                target = ssh_target(node, self.facts, self.ssh)
                self.probe({node.name: target})  # an activation left in progress is settled first
                listing = run_remote(target, ["/bin/sh", "-c", PREVIOUS_GENERATION], check=False, timeout=30)
                found = previous_generation(listing.stdout) if listing.returncode == 0 else None
                if found is None:
                    detail = "no previous generation to roll back to"
                    outcomes.append(NodeOutcome(node.name, "failed", detail=detail))
                    continue
                number, previous, current = found
                outcomes.append(self.activate(target, previous, current, generation=number))
            return outcomes


# What runs now, then the generation before the current one: the current one is the newest
# generation, at or below the profile's, that runs now (the profile may have been staged elsewhere).
PREVIOUS_GENERATION = r"""
cd /nix/var/nix/profiles || exit 1
running=$(readlink -f /run/current-system) || exit 1
echo "running $running"
gens=$(ls -1 | sed -n 's/^system-\([0-9]*\)-link$/\1/p' | sort -rn)
cur=$(readlink system | sed -n 's/^system-\([0-9]*\)-link$/\1/p')
at=""
for g in $gens; do
  [ "$g" -le "${cur:-0}" ] && [ "$(readlink -f "system-$g-link")" = "$running" ] && { at=$g; break; }
done
at=${at:-$cur}
for g in $gens; do
  if [ "$g" -lt "${at:-0}" ] && [ "$(readlink -f "system-$g-link")" != "$running" ]; then
    echo "previous $g $(readlink -f "system-$g-link")"; exit 0
  fi
done
"""


def previous_generation(listing: str) -> tuple[int, str, str | None] | None:
    """(number, store path, what runs now) from PREVIOUS_GENERATION's output, or None."""
    running: str | None = None
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "running" and STORE_PATH.fullmatch(parts[1]):
            running = parts[1]
        if len(parts) == 3 and parts[0] == "previous" and parts[1].isdigit() and STORE_PATH.fullmatch(parts[2]):
            return int(parts[1]), parts[2], running
    return None


class Interrupted(Exception):
    """Ctrl-C reached a worker: it stops at once (the main thread says what is left running)."""


def _descendants(root: int, exclude: frozenset[int] | set[int]) -> set[int]:
    """Every process below `root` (from /proc), not looking below the pids in `exclude`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in exclude and child not in found:
                found.add(child)
                todo.append(child)
    return found


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
