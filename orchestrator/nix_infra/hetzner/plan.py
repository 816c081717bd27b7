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
- Volumes are matched by their nix-infra/node and nix-infra/volume labels,
  created in the node's location and attached to its server; they grow, never
  shrink (a smaller size is a problem naming the spec field), and a volume
  attached to another server is a problem (never moved silently). Volumes the
  manifest no longer has are orphans: only `destroy --volume` deletes them.
- Stateful nodes' servers get delete and rebuild protection, every volume
  delete protection. A provision plan never deletes a server or a volume; a
  change that destroys data (only `destroy` plans have them) carries
  `data_loss`, and the plan lists them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from nix_infra.hetzner.model import (
    Actual,
    ActualPlacementGroup,
    ActualVolume,
    Desired,
    placement_group_name,
)

SPREAD_LIMIT = 10
KIND_ORDER = ("ssh_key", "network", "placement_group", "firewall", "server", "volume")


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete
    kind: str  # ssh_key | network | placement_group | firewall | server
    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)  # create: the spec; update: {field: [old, new]}
    resource_id: int | None = None
    data_loss: str | None = None  # what this change destroys for good (None: nothing)

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
        if self.data_loss is not None:
            out["dataLoss"] = self.data_loss
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
    orphan_volumes: tuple[str, ...] = ()  # owned volumes not in the manifest (only `destroy --volume`)
    notes: tuple[str, ...] = ()  # what is deliberately left alone

    @property
    def data_loss(self) -> list[Change]:
        """The changes that destroy data."""
        return [c for c in self.changes if c.data_loss is not None]

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
            "orphanVolumes": list(self.orphan_volumes),
            "dataLoss": [f"{c.kind} {c.name}: {c.data_loss}" for c in self.data_loss],
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
        protection = {"delete": current.protect_delete, "rebuild": current.protect_rebuild}
        if protection != {"delete": d.protect, "rebuild": d.protect}:
            diff["protection"] = [protection, {"delete": d.protect, "rebuild": d.protect}]
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
                    "protect": d.protect,
                },
            )
        )

    orphan_volumes = _plan_volumes(desired, actual, changes, problems, name_free)
    return Plan(desired.cluster, _order(changes), tuple(orphans), tuple(problems), tuple(orphan_volumes))


def _plan_volumes(
    desired: Desired,
    actual: Actual,
    changes: list[Change],
    problems: list[Problem],
    name_free: Callable[[str, str], bool],
) -> list[str]:
    """Volumes: create, attach, grow, label and protect; refuse to shrink, move or re-locate."""
    servers = {s.node: s for s in actual.servers if s.node is not None}
    by_key: dict[tuple[str | None, str | None], list[ActualVolume]] = {}
    for v in actual.volumes:
        by_key.setdefault((v.node, v.volume), []).append(v)
    wanted = {(d.node, d.volume) for d in desired.volumes}
    for d in desired.volumes:
        field_path = f"nodes.{d.node}.volumes.{d.volume}"
        found = by_key.get((d.node, d.volume), [])
        if len(found) > 1:
            problems.append(
                Problem(
                    "volume",
                    d.name,
                    f"{len(found)} volumes carry nix-infra/node={d.node}, nix-infra/volume={d.volume} "
                    f"(ids {', '.join(str(v.id) for v in found)}); keep the one with the data, relabel or "
                    "delete the others in the Hetzner console",
                )
            )
            continue
        if not found:
            if name_free("volume", d.name):
                changes.append(
                    Change(
                        "create",
                        "volume",
                        d.name,
                        {
                            "node": d.node,
                            "volume": d.volume,
                            "size": d.size,
                            "location": d.location,
                            "format": d.filesystem,
                            "server": d.server,
                            "labels": dict(d.labels),
                            "protect": True,
                        },
                    )
                )
            continue
        current = found[0]
        if current.location != d.location:
            problems.append(
                Problem(
                    "volume",
                    d.name,
                    f"{field_path}: the volume is in {current.location}, node {d.node} in {d.location}; "
                    "a volume cannot move and attaches only to servers of its location",
                )
            )
            continue
        diff: dict[str, Any] = {}
        if d.size < current.size:
            problems.append(
                Problem(
                    "volume",
                    d.name,
                    f"{field_path}.size: {d.size} GB is smaller than the volume's {current.size} GB; "
                    "Hetzner volumes cannot shrink (set size back to at least "
                    f"{current.size}, or move the data to a new volume)",
                )
            )
        elif d.size > current.size:
            diff["size"] = [current.size, d.size]
        if current.labels != d.labels:
            diff["labels"] = [dict(current.labels), dict(d.labels)]
        if current.name != d.name:
            diff["name"] = [current.name, d.name]
        if not current.protect_delete:
            diff["protection"] = [{"delete": False}, {"delete": True}]
        server = servers.get(d.node)
        if current.server_id is None:
            diff["server"] = [None, d.server]
        elif server is None or current.server_id != server.id:
            problems.append(
                Problem(
                    "volume",
                    d.name,
                    f"{field_path}: the volume is attached to server {current.server_id}, not to node "
                    f"{d.node}'s server; nix-infra never moves a volume with data between servers "
                    "(detach it in the Hetzner console if that is what you want)",
                )
            )
        if diff:
            changes.append(Change("update", "volume", d.name, diff, current.id))
    return sorted(v.name for v in actual.volumes if (v.node, v.volume) not in wanted)


def destroy_plan(
    cluster: str,
    actual: Actual,
    nodes: list[str] | None,
    volumes: list[tuple[str, str]],
    stateful: Mapping[str, str],
    known: Collection[str] = (),
) -> Plan:
    """What `destroy` deletes: the servers of `nodes` (None: everything the cluster owns, volumes
    included) and the `volumes` named (node, volume). `stateful` maps a node to why the
    manifest says it holds data. Every change that destroys data carries `data_loss`."""
    changes: list[Change] = []
    problems: list[Problem] = []
    notes: list[str] = []
    by_node = {s.node: s for s in actual.servers}
    victims = list(actual.servers) if nodes is None else [by_node[n] for n in nodes if n in by_node]
    for n in nodes or []:
        if n not in by_node and n not in known:  # known: facts remain, apply_destroy forgets them
            problems.append(
                Problem(
                    "server",
                    n,
                    f"no server of cluster {cluster} carries node {n}; its servers are: "
                    f"{', '.join(sorted(s.node or s.name for s in actual.servers)) or 'none'}",
                )
            )
    for s in victims:
        attached = sorted(v.name for v in actual.volumes if v.server_id == s.id)
        reasons = []
        if s.node in stateful:
            reasons.append(stateful[s.node or ""])
        if s.protect_delete:
            reasons.append("its server is delete-protected")
        loss = f"node {s.node}'s disk ({'; '.join(reasons)})" if reasons else None
        fields: dict[str, Any] = {"node": s.node, "protected": s.protect_delete, "volumes_detached": attached}
        changes.append(Change("delete", "server", s.name, fields, s.id, loss))
    by_key = {(v.node, v.volume): v for v in actual.volumes}
    doomed = list(actual.volumes) if nodes is None else []
    for node, vol in volumes:
        found = by_key.get((node, vol))
        if found is None:
            problems.append(
                Problem(
                    "volume",
                    f"{node}/{vol}",
                    f"cluster {cluster} has no volume {vol} of node {node}; its volumes are: "
                    f"{', '.join(sorted(f'{v.node}/{v.volume}' for v in actual.volumes)) or 'none'}",
                )
            )
        elif found not in doomed:
            doomed.append(found)
    for v in doomed:
        fields = {"node": v.node, "volume": v.volume, "size": v.size, "protected": v.protect_delete}
        loss = f"every file on volume {v.volume} of node {v.node} ({v.size} GB)"
        changes.append(Change("delete", "volume", v.name, fields, v.id, loss))
    if nodes is None:
        ours = {s.id for s in actual.servers}
        for f in actual.firewalls:
            changes.append(Change("delete", "firewall", f.name, {}, f.id))
        for g in actual.placement_groups:
            others = [i for i in g.server_ids if i not in ours]
            if others:  # deleting it would take it from servers that are not ours
                notes.append(f"placement group {g.name} kept: it holds {len(others)} server(s) of others")
            else:
                changes.append(Change("delete", "placement_group", g.name, {}, g.id))
        for net in actual.networks:
            changes.append(Change("delete", "network", net.name, {}, net.id))
        for k in actual.ssh_keys:
            if dict(k.labels).get("nix-infra/cluster") == cluster:
                changes.append(Change("delete", "ssh_key", k.name, {}, k.id))
    return Plan(cluster, _order(changes), (), tuple(problems), notes=tuple(notes))


def _empty_groups(groups: list[ActualPlacementGroup], used: set[str]) -> list[ActualPlacementGroup]:
    """Owned groups nothing is in (no server of anyone's) and nothing is planned for."""
    return [g for g in groups if g.name not in used and not g.server_ids]
