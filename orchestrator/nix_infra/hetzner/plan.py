"""Reconcile planning: desired vs actual, as a list of changes. Pure.

Rules:
- Only resources labelled nix-infra/cluster=<cluster> are ever changed or deleted.
- SSH keys are matched by fingerprint: a key already in the project (owned or
  not) is used, never uploaded twice.
- Servers are matched by their nix-infra/node label. Servers the manifest no
  longer has are listed as orphans: only `destroy` deletes servers.
- Placement groups (spread, at most 10 servers each) are assigned to new
  servers only; existing servers keep theirs. A group's fill is what the API
  lists in it, everyone's servers counted (another cluster's or a hand-made
  server in our group takes a place too); a group holding any server is not
  deleted.
- What cannot be changed in place (a server's type or location, the network's
  range, a name held by a foreign resource) is a problem: the plan shows it
  and provision refuses to start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nix_infra.hetzner.model import (
    Actual,
    ActualPlacementGroup,
    Desired,
    placement_group_name,
)

SPREAD_LIMIT = 10
KIND_ORDER = ("ssh_key", "network", "placement_group", "firewall", "server")


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete
    kind: str  # ssh_key | network | placement_group | firewall | server
    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)  # create: the spec; update: {field: [old, new]}
    resource_id: int | None = None

    @property
    def rid(self) -> int:
        """The id of the existing resource an update or delete acts on."""
        if self.resource_id is None:
            raise ValueError(f"{self.action} {self.kind} {self.name} has no resource id")
        return self.resource_id

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "kind": self.kind, "name": self.name, "fields": dict(self.fields)}
        if self.resource_id is not None:
            out["id"] = self.resource_id
        return out


@dataclass(frozen=True)
class Problem:
    kind: str
    name: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "message": self.message}


@dataclass(frozen=True)
class Plan:
    cluster: str
    changes: tuple[Change, ...]
    orphans: tuple[str, ...] = ()  # owned servers not in the manifest (only `destroy` deletes them)
    problems: tuple[Problem, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def of(self, action: str, kind: str) -> list[Change]:
        return [c for c in self.changes if c.action == action and c.kind == kind]

    def to_json(self) -> dict[str, Any]:
        counts = Counter(c.action for c in self.changes)
        return {
            "cluster": self.cluster,
            "changes": [c.to_json() for c in self.changes],
            "summary": {a: counts.get(a, 0) for a in ("create", "update", "delete")},
            "orphans": list(self.orphans),
            "problems": [p.to_json() for p in self.problems],
        }


def _order(changes: list[Change]) -> tuple[Change, ...]:
    rank = {"create": 0, "update": 1, "delete": 2}
    return tuple(sorted(changes, key=lambda c: (rank[c.action], KIND_ORDER.index(c.kind), c.name)))


def plan(desired: Desired, actual: Actual) -> Plan:
    changes: list[Change] = []
    problems: list[Problem] = []
    foreign = actual.foreign_names

    def name_free(kind: str, name: str) -> bool:
        if (kind, name) in foreign:
            problems.append(
                Problem(
                    kind,
                    name,
                    f"the name {name} is taken by a {kind.replace('_', ' ')} "
                    f"not labelled nix-infra/cluster={desired.cluster}; "
                    "rename or label it, nix-infra never touches it",
                )
            )
            return False
        return True

    # SSH keys: by fingerprint; keys of the project not ours are used as they are.
    by_fp = {k.fingerprint: k for k in actual.ssh_keys}
    wanted_fps = {k.fingerprint for k in desired.ssh_keys}
    for key in desired.ssh_keys:
        if key.fingerprint not in by_fp and name_free("ssh_key", key.name):
            changes.append(Change("create", "ssh_key", key.name, {"fingerprint": key.fingerprint}))
    for k in actual.ssh_keys:
        if dict(k.labels).get("nix-infra/cluster") == desired.cluster and k.fingerprint not in wanted_fps:
            changes.append(Change("delete", "ssh_key", k.name, {"fingerprint": k.fingerprint}, k.id))

    # Network: exactly one, named after the cluster.
    dn = desired.network
    network = next((n for n in actual.networks if n.name == dn.name), None)
    if network is None:
        if name_free("network", dn.name):
            changes.append(
                Change("create", "network", dn.name, {"ip_range": dn.ip_range, "subnet": dn.subnet, "zone": dn.zone})
            )
    else:
        if network.ip_range != dn.ip_range:
            problems.append(
                Problem(
                    "network",
                    dn.name,
                    f"ip_range is {network.ip_range}, the manifest says "
                    f"{dn.ip_range}; a network's range cannot change in place "
                    "(destroy --all and provision again)",
                )
            )
        elif (dn.subnet, dn.zone) not in network.subnets:
            changes.append(
                Change(
                    "update", "network", dn.name, {"subnet": [list(network.subnets), [dn.subnet, dn.zone]]}, network.id
                )
            )
    for n in actual.networks:
        if n.name != dn.name:
            changes.append(Change("delete", "network", n.name, {"ip_range": n.ip_range}, n.id))

    # Firewalls: one per node type, applied by label selector.
    wanted_fw = {f.name: f for f in desired.firewalls}
    actual_fw = {f.name: f for f in actual.firewalls}
    for f in desired.firewalls:
        current = actual_fw.get(f.name)
        if current is None:
            if name_free("firewall", f.name):
                changes.append(
                    Change(
                        "create", "firewall", f.name, {"rules": [r.to_json() for r in f.rules], "apply_to": f.selector}
                    )
                )
            continue
        diff: dict[str, Any] = {}
        if current.rules != f.rules:
            diff["rules"] = [[r.to_json() for r in current.rules], [r.to_json() for r in f.rules]]
        if current.selectors != (f.selector,) or current.server_ids:
            diff["apply_to"] = [list(current.selectors) + [f"server {i}" for i in current.server_ids], [f.selector]]
        if diff:
            changes.append(Change("update", "firewall", f.name, diff, current.id))
    for old in actual.firewalls:
        if old.name not in wanted_fw:
            changes.append(Change("delete", "firewall", old.name, {}, old.id))

    # Servers: matched by node label.
    wanted_nodes = {s.node: s for s in desired.servers}
    by_node: dict[str, list[Any]] = {}
    for s in actual.servers:
        by_node.setdefault(s.node or "", []).append(s)
    orphans = sorted(s.name for s in actual.servers if s.node not in wanted_nodes)
    for node, found in by_node.items():
        if node in wanted_nodes and len(found) > 1:
            problems.append(
                Problem(
                    "server",
                    wanted_nodes[node].name,
                    f"{len(found)} servers carry nix-infra/node={node} "
                    f"(ids {', '.join(str(s.id) for s in found)}); destroy the extra ones",
                )
            )
    network_id = network.id if network is not None else None
    new_servers = []
    for d in desired.servers:
        found = by_node.get(d.node, [])
        if not found:
            if name_free("server", d.name):
                new_servers.append(d)
            continue
        current = found[0]
        if current.server_type != d.server_type:
            problems.append(
                Problem(
                    "server",
                    d.name,
                    f"server type is {current.server_type}, the manifest says "
                    f"{d.server_type}; resizing is not automated (destroy {d.node} and "
                    "provision again, or resize in the Hetzner console)",
                )
            )
        if current.location != d.location:
            problems.append(
                Problem(
                    "server",
                    d.name,
                    f"location is {current.location}, the manifest says "
                    f"{d.location}; a server cannot move (destroy {d.node} and provision again)",
                )
            )
        diff = {}
        if current.labels != d.labels:
            diff["labels"] = [dict(current.labels), dict(d.labels)]
        attached = dict(current.private_nets).get(network_id) if network_id is not None else None
        if attached != d.private_ip:
            diff["private_ip"] = [attached, d.private_ip]
        if current.name != d.name:
            diff["name"] = [current.name, d.name]
        if diff:
            changes.append(Change("update", "server", d.name, diff, current.id))

    # Placement groups: existing servers keep theirs; new ones fill groups with room. The limit is
    # the provider's: every server the API lists in a group counts, ours or not.
    owned_groups = sorted(actual.placement_groups, key=lambda g: g.name)
    fill = {g.name: len(g.server_ids) for g in owned_groups}
    created_groups: list[str] = []
    assignment: dict[str, str] = {}
    index = 1
    for d in new_servers:
        group = next((g for g in [*fill] if fill[g] < SPREAD_LIMIT), None)
        if group is None:
            existing_names = {g.name for g in owned_groups} | set(created_groups)
            while (
                placement_group_name(desired.cluster, index) in existing_names
                or ("placement_group", placement_group_name(desired.cluster, index)) in foreign
            ):
                index += 1
            group = placement_group_name(desired.cluster, index)
            created_groups.append(group)
            fill[group] = 0
        fill[group] += 1
        assignment[d.name] = group
    for group_name in created_groups:
        changes.append(Change("create", "placement_group", group_name, {"type": "spread"}))
    for g in _empty_groups(owned_groups, set(assignment.values())):
        changes.append(Change("delete", "placement_group", g.name, {}, g.id))
    for d in new_servers:
        changes.append(
            Change(
                "create",
                "server",
                d.name,
                {
                    "node": d.node,
                    "server_type": d.server_type,
                    "image": d.image,
                    "location": d.location,
                    "private_ip": d.private_ip,
                    "placement_group": assignment[d.name],
                    "labels": dict(d.labels),
                },
            )
        )

    return Plan(desired.cluster, _order(changes), tuple(orphans), tuple(problems))


def _empty_groups(groups: list[ActualPlacementGroup], used: set[str]) -> list[ActualPlacementGroup]:
    """Owned groups nothing is in (no server of anyone's) and nothing is planned for."""
    return [g for g in groups if g.name not in used and not g.server_ids]
