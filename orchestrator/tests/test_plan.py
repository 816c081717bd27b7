"""Unit tests of reconcile planning (pure: desired and actual built by hand)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from nix_infra.errors import NixInfraError
from nix_infra.hetzner.model import (
    Actual,
    ActualFirewall,
    ActualNetwork,
    ActualPlacementGroup,
    ActualServer,
    ActualSshKey,
    Desired,
    desired_state,
)
from nix_infra.hetzner.plan import Plan, plan
from nix_infra.manifest import parse_manifest

EMPTY = Actual((), (), (), (), (), frozenset())


@pytest.fixture
def desired(example_manifest: dict[str, Any]) -> Desired:
    return desired_state(parse_manifest(example_manifest))


def converged(d: Desired, *, group_of: dict[str, int] | None = None) -> Actual:
    """The actual state provision leaves behind for `d` (ids: network 1, group 2, servers 10+)."""
    servers = tuple(
        ActualServer(
            id=10 + i,
            name=s.name,
            status="running",
            server_type=s.server_type,
            location=s.location,
            image=s.image,
            labels=s.labels,
            private_nets=((1, s.private_ip),),
            placement_group_id=2,
        )
        for i, s in enumerate(d.servers)
    )
    return Actual(
        ssh_keys=tuple(ActualSshKey(100 + i, k.name, k.fingerprint, d.owner) for i, k in enumerate(d.ssh_keys)),
        networks=(
            ActualNetwork(1, d.network.name, d.network.ip_range, ((d.network.subnet, d.network.zone),), d.owner),
        ),
        firewalls=tuple(
            ActualFirewall(200 + i, f.name, f.rules, (f.selector,), (), d.owner) for i, f in enumerate(d.firewalls)
        ),
        placement_groups=(ActualPlacementGroup(2, f"{d.cluster}-spread-1", tuple(s.id for s in servers), d.owner),),
        servers=servers,
        foreign_names=frozenset(),
    )


def kinds(p: Plan, action: str) -> list[tuple[str, str]]:
    return [(c.kind, c.name) for c in p.changes if c.action == action]


def test_empty_project_creates_everything(desired: Desired) -> None:
    p = plan(desired, EMPTY)
    assert kinds(p, "create") == [
        ("ssh_key", desired.ssh_keys[0].name),
        ("network", "demo"),
        ("placement_group", "demo-spread-1"),
        ("firewall", "demo-ctrl"),
        ("firewall", "demo-worker"),
        ("server", "demo-ctrl001"),
        ("server", "demo-worker001"),
    ]
    server = next(c for c in p.changes if c.name == "demo-worker001")
    assert server.fields["private_ip"] == "10.10.64.1"
    assert server.fields["labels"]["nix-infra/node"] == "worker001"
    assert p.problems == () and p.orphans == ()


def test_converged_state_has_an_empty_plan(desired: Desired) -> None:
    p = plan(desired, converged(desired))
    assert p.changes == () and p.problems == () and not p.has_changes


def test_firewalls_follow_the_manifest(desired: Desired) -> None:
    ctrl = next(f for f in desired.firewalls if f.name == "demo-ctrl")
    assert [(r.protocol, r.port, r.sources) for r in ctrl.rules] == [("tcp", "22", ("203.0.113.0/24",))]
    assert ctrl.selector == "nix-infra/cluster=demo,nix-infra/type=ctrl"


def test_ingress_gets_web_ports_from_anywhere(example_manifest: dict[str, Any]) -> None:
    data = dict(example_manifest)
    edge = {**data["nodes"]["ctrl001"], "name": "edge001", "type": "ingress", "system": "nixosConfigurations.edge001"}
    edge["labels"] = {**edge["labels"], "nix-infra/node": "edge001", "nix-infra/type": "ingress"}
    edge["wave"] = len(data["waves"])
    data["nodes"] = {**data["nodes"], "edge001": edge}
    data["waves"] = [*data["waves"], ["edge001"]]
    data["nodes"]["edge001"]["firewall"] = {
        "public": {"tcp": [22, 80, 443], "udp": []},
        "private": {"tcp": [], "udp": []},
    }
    d = desired_state(parse_manifest(data))
    fw = next(f for f in d.firewalls if f.name == "demo-ingress")
    assert [(r.port, r.sources) for r in fw.rules] == [
        ("22", ("203.0.113.0/24",)),
        ("443", ("0.0.0.0/0", "::/0")),
        ("80", ("0.0.0.0/0", "::/0")),
    ]


def test_foreign_ssh_key_is_used_not_uploaded(desired: Desired) -> None:
    key = desired.ssh_keys[0]
    actual = dataclasses.replace(EMPTY, ssh_keys=(ActualSshKey(5, "someone-elses", key.fingerprint, ()),))
    assert ("ssh_key", key.name) not in kinds(plan(desired, actual), "create")


def test_stale_owned_ssh_key_is_deleted_foreign_never(desired: Desired) -> None:
    actual = converged(desired)
    actual = dataclasses.replace(
        actual,
        ssh_keys=(
            *actual.ssh_keys,
            ActualSshKey(7, "demo-old", "aa:bb", desired.owner),
            ActualSshKey(8, "theirs", "cc:dd", ()),
        ),
    )
    assert kinds(plan(desired, actual), "delete") == [("ssh_key", "demo-old")]


def test_name_held_by_a_foreign_resource_is_a_problem(desired: Desired) -> None:
    actual = dataclasses.replace(EMPTY, foreign_names=frozenset({("server", "demo-ctrl001"), ("network", "demo")}))
    p = plan(desired, actual)
    assert {(pr.kind, pr.name) for pr in p.problems} == {("server", "demo-ctrl001"), ("network", "demo")}
    assert ("server", "demo-ctrl001") not in kinds(p, "create")
    assert "not labelled nix-infra/cluster=demo" in p.problems[0].message


def test_server_not_in_manifest_is_an_orphan_never_deleted(desired: Desired) -> None:
    actual = converged(desired)
    old = dataclasses.replace(actual.servers[0], id=99, name="demo-old001", labels=(("nix-infra/node", "old001"),))
    p = plan(desired, dataclasses.replace(actual, servers=(*actual.servers, old)))
    assert p.orphans == ("demo-old001",)
    assert not [c for c in p.changes if c.kind == "server"]


def test_drift_in_labels_and_private_ip_is_updated(desired: Desired) -> None:
    actual = converged(desired)
    w = actual.servers[1]
    drifted = dataclasses.replace(w, labels=(("nix-infra/node", "worker001"),), private_nets=((1, "10.10.9.9"),))
    p = plan(desired, dataclasses.replace(actual, servers=(actual.servers[0], drifted)))
    [change] = p.changes
    assert (change.action, change.name, change.resource_id) == ("update", "demo-worker001", w.id)
    assert change.fields["private_ip"] == ["10.10.9.9", "10.10.64.1"]
    assert set(change.fields) == {"labels", "private_ip"}


def test_unattached_server_gets_attached(desired: Desired) -> None:
    actual = converged(desired)
    bare = dataclasses.replace(actual.servers[0], private_nets=())
    p = plan(desired, dataclasses.replace(actual, servers=(bare, actual.servers[1])))
    assert p.changes[0].fields == {"private_ip": [None, "10.10.32.1"]}


def test_type_or_location_change_is_a_problem(desired: Desired) -> None:
    actual = converged(desired)
    moved = dataclasses.replace(actual.servers[0], server_type="cx52", location="hel1")
    p = plan(desired, dataclasses.replace(actual, servers=(moved, actual.servers[1])))
    messages = " ".join(pr.message for pr in p.problems)
    assert "server type is cx52" in messages and "location is hel1" in messages


def test_network_range_change_is_a_problem(desired: Desired) -> None:
    actual = converged(desired)
    net = dataclasses.replace(actual.networks[0], ip_range="10.99.0.0/16")
    p = plan(desired, dataclasses.replace(actual, networks=(net,)))
    assert [pr.kind for pr in p.problems] == ["network"]


def test_duplicate_servers_for_one_node_is_a_problem(desired: Desired) -> None:
    actual = converged(desired)
    twin = dataclasses.replace(actual.servers[0], id=77, name="demo-ctrl001-twin")
    p = plan(desired, dataclasses.replace(actual, servers=(*actual.servers, twin)))
    assert "2 servers carry nix-infra/node=ctrl001" in p.problems[0].message


def test_firewall_rule_and_target_drift(desired: Desired) -> None:
    actual = converged(desired)
    fw = dataclasses.replace(actual.firewalls[0], rules=(), server_ids=(10,))
    p = plan(desired, dataclasses.replace(actual, firewalls=(fw, actual.firewalls[1])))
    [change] = p.changes
    assert change.kind == "firewall" and set(change.fields) == {"rules", "apply_to"}


def test_extra_owned_firewall_is_deleted(desired: Desired) -> None:
    actual = converged(desired)
    extra = ActualFirewall(300, "demo-registry", (), (), (), desired.owner)
    p = plan(desired, dataclasses.replace(actual, firewalls=(*actual.firewalls, extra)))
    assert kinds(p, "delete") == [("firewall", "demo-registry")]


def many_workers(desired: Desired, n: int) -> Desired:
    base = desired.servers[1]
    extra = tuple(
        dataclasses.replace(base, name=f"demo-w{i:03d}", node=f"w{i:03d}", private_ip=f"10.10.64.{i + 2}")
        for i in range(n)
    )
    return dataclasses.replace(desired, servers=(*desired.servers, *extra))


def test_placement_groups_hold_at_most_ten(desired: Desired) -> None:
    d = many_workers(desired, 23)  # 25 servers
    p = plan(d, EMPTY)
    assert kinds(p, "create").count(("placement_group", "demo-spread-1")) == 1
    groups = [c.fields["placement_group"] for c in p.changes if c.kind == "server"]
    assert sorted(groups.count(g) for g in set(groups)) == [5, 10, 10]


def test_new_servers_fill_existing_groups_first_and_empty_groups_go(desired: Desired) -> None:
    actual = converged(desired)  # both servers in demo-spread-1 (id 2)
    empty = ActualPlacementGroup(3, "demo-spread-7", (), desired.owner)
    d = many_workers(desired, 9)  # 11 servers: 8 more fit in spread-1, 1 needs a new group
    p = plan(d, dataclasses.replace(actual, placement_groups=(*actual.placement_groups, empty)))
    groups = [c.fields["placement_group"] for c in p.changes if c.kind == "server"]
    assert groups.count("demo-spread-1") == 8
    assert groups.count("demo-spread-7") == 1  # the empty owned group is reused, not deleted
    assert kinds(p, "delete") == []


def test_unneeded_empty_group_is_deleted(desired: Desired) -> None:
    actual = converged(desired)
    empty = ActualPlacementGroup(3, "demo-spread-2", (), desired.owner)
    p = plan(desired, dataclasses.replace(actual, placement_groups=(*actual.placement_groups, empty)))
    assert kinds(p, "delete") == [("placement_group", "demo-spread-2")]


def test_local_provider_is_refused(example_manifest: dict[str, Any]) -> None:
    data = {**example_manifest, "provider": {**example_manifest["provider"], "type": "local"}}
    with pytest.raises(NixInfraError, match='needs "hetzner"'):
        desired_state(parse_manifest(data))


def test_plan_json_shape(desired: Desired) -> None:
    data = plan(desired, EMPTY).to_json()
    assert data["summary"] == {"create": 7, "update": 0, "delete": 0}
    assert {c["kind"] for c in data["changes"]} == {"ssh_key", "network", "placement_group", "firewall", "server"}
