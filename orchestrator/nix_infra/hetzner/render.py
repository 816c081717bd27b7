"""Showing a plan to a person: grouped by resource, colored by action."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from nix_infra.hetzner.plan import KIND_ORDER, Change, Plan

TITLES = {
    "ssh_key": "ssh keys",
    "network": "network",
    "placement_group": "placement groups",
    "firewall": "firewalls",
    "server": "servers",
    "volume": "volumes",
}
STYLE = {"create": ("+", "green"), "update": ("~", "yellow"), "delete": ("-", "red")}


def _describe(c: Change) -> str:
    f = c.fields
    if c.action == "create":
        if c.kind == "server":
            return (
                f"{f['server_type']} {f['location']} {f['image']}  private {f['private_ip']}  "
                f"group {f['placement_group']}"
            )
        if c.kind == "volume":
            return f"{f['size']} GB {f['format']} {f['location']}  attached to {f['server']}  delete-protected"
        if c.kind == "network":
            return f"{f['ip_range']} ({f['zone']})"
        if c.kind == "ssh_key":
            return f"fingerprint {f['fingerprint']}"
        if c.kind == "firewall":
            rules = (
                "; ".join(
                    f"{r['direction']} {r['protocol']} {r['port']} from {', '.join(r['source_ips'])}"
                    for r in f["rules"]
                )
                or "no rules"
            )
            return f"{rules}  (servers matching {f['apply_to']})"
        return ""
    if c.action == "update":
        return "; ".join(f"{name}: {_short(old)} -> {_short(new)}" for name, (old, new) in f.items())
    if c.kind == "server" and f.get("volumes_detached"):
        return f"volumes {', '.join(f['volumes_detached'])} are detached and kept"
    return ""


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def render_plan(plan: Plan, console: Console) -> None:
    console.print(Text(f"Plan for cluster {plan.cluster}", style="bold"))
    if not plan.changes and not plan.orphans and not plan.orphan_volumes and not plan.problems:
        console.print("No changes: the cloud matches the manifest.")
        return
    for kind in KIND_ORDER:
        changes = [c for c in plan.changes if c.kind == kind]
        if not changes:
            continue
        console.print(Text(f"\n{TITLES[kind]}", style="bold"))
        for c in changes:
            mark, color = STYLE[c.action]
            line = Text(f"  {mark} {c.name}", style=color)
            detail = _describe(c)
            if detail:
                line.append(f"  {detail}")
            if c.data_loss is not None:
                line.append(f"  DATA LOSS: destroys {c.data_loss}", style="bold red")
            console.print(line)
    if plan.orphans:
        console.print(Text("\nservers not in the manifest (only `nix-infra destroy NODE` deletes them)", style="bold"))
        for name in plan.orphans:
            console.print(Text(f"  ! {name}", style="magenta"))
    if plan.orphan_volumes:
        console.print(
            Text(
                "\nvolumes not in the manifest (kept with their data; only `destroy --volume` deletes them)",
                style="bold",
            )
        )
        for name in plan.orphan_volumes:
            console.print(Text(f"  ! {name}", style="magenta"))
    if plan.problems:
        console.print(Text("\nproblems (provision refuses until they are resolved)", style="bold red"))
        for p in plan.problems:
            console.print(Text(f"  x {p.kind} {p.name}: {p.message}", style="red"))
    s = plan.to_json()["summary"]
    console.print(f"\nPlan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete.")
    losses = plan.data_loss
    if losses:
        console.print(
            Text(f"{len(losses)} of these changes destroy data for good (marked DATA LOSS).", style="bold red")
        )
