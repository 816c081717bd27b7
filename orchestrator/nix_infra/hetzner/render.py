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
    return ""


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def render_plan(plan: Plan, console: Console) -> None:
    console.print(Text(f"Plan for cluster {plan.cluster}", style="bold"))
    if not plan.changes and not plan.orphans and not plan.problems:
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
            console.print(line)
    if plan.orphans:
        console.print(Text("\nservers not in the manifest (only `nix-infra destroy NODE` deletes them)", style="bold"))
        for name in plan.orphans:
            console.print(Text(f"  ! {name}", style="magenta"))
    if plan.problems:
        console.print(Text("\nproblems (provision refuses until they are resolved)", style="bold red"))
        for p in plan.problems:
            console.print(Text(f"  x {p.kind} {p.name}: {p.message}", style="red"))
    s = plan.to_json()["summary"]
    console.print(f"\nPlan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete.")
