"""Property: for random desired and actual states, applying the plan reaches the
desired state, a second plan is empty, and nothing foreign is touched.

Actual states are seeded straight into the fake (owned resources with drift,
half-finished runs, orphans, foreign resources); plan and apply run through the
real hcloud client.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nix_infra.fake_hcloud import FakeHcloud
from nix_infra.hetzner.apply import Applier
from nix_infra.hetzner.client import HcloudSettings, make_client
from nix_infra.hetzner.model import desired_state, read_actual, server_name
from nix_infra.hetzner.plan import plan
from nix_infra.manifest import parse_manifest

from .conftest import example_manifest_data

KEYS = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 a",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8ZQ6WcYc0sQF7zN2yH3l4m5n6o7p8q9r0s1t2u3v4w b",
]
STALE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk4Yw0Vq1m2n3b4v5c6x7z8a9s0d1f2g3h4j5k6l7p8 old"
TEMPLATE: dict[str, Any] = {}


def template() -> dict[str, Any]:
    if not TEMPLATE:
        TEMPLATE.update(example_manifest_data())
    return copy.deepcopy(TEMPLATE)


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    m = template()
    m["cluster"] = "prop"
    m["labels"] = {"nix-infra/cluster": "prop"}
    m["sshKeys"] = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True))
    m["adminCidrs"] = draw(st.lists(st.sampled_from(["203.0.113.0/24", "198.51.100.7/32"]), min_size=1, unique=True))
    ctrl = m["nodes"]["ctrl001"]
    nodes = {}
    count = draw(st.integers(1, 14))
    for i in range(count):
        node_type = "ctrl" if i == 0 else draw(st.sampled_from(["worker", "service", "ingress"]))
        name = f"{node_type}{i:03d}"
        public_tcp = [22, 80, 443] if node_type == "ingress" else [22]
        nodes[name] = {
            **copy.deepcopy(ctrl),
            "name": name,
            "type": node_type,
            "serverType": draw(st.sampled_from(["cx22", "cpx21"])),
            "location": draw(st.sampled_from(["fsn1", "nbg1", "hel1"])),
            "privateIp": f"10.10.{i + 1}.{draw(st.integers(2, 250))}",
            "labels": {"nix-infra/cluster": "prop", "nix-infra/node": name, "nix-infra/type": node_type},
            "firewall": {"public": {"tcp": public_tcp, "udp": []}, "private": {"tcp": [], "udp": [51820]}},
        }
    m["nodes"] = nodes
    others = [n for n in nodes if nodes[n]["type"] != "ctrl"]
    m["waves"] = [[n] for n in nodes if nodes[n]["type"] == "ctrl"] + ([others] if others else [])
    for i, wave in enumerate(m["waves"]):
        for n in wave:
            nodes[n]["wave"] = i
    # the rest of the manifest refers to these nodes only (the loader checks every reference)
    m["etcd"] = {**m["etcd"], "members": ["ctrl000"], "endpoints": [f"https://{nodes['ctrl000']['privateIp']}:2379"]}
    m["apps"], m["etcdSeed"], m["secrets"] = {}, {}, []
    return m


@st.composite
def seeds(draw: st.DrawFn, m: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Operations that build a random starting state in the fake."""
    owner = {"nix-infra/cluster": "prop"}
    ops: list[tuple[str, dict[str, Any]]] = []
    if draw(st.booleans()):
        ops.append(("ssh_key", {"name": "prop-stale", "public_key": STALE_KEY, "labels": owner}))
    if draw(st.booleans()):  # somebody else's key with one of ours: must be reused, not uploaded
        ops.append(("ssh_key", {"name": "colleague", "public_key": m["sshKeys"][0], "labels": {}}))
    network = draw(st.sampled_from(["none", "full", "no-subnet"]))
    if network != "none":
        subnets = (
            []
            if network == "no-subnet"
            else [{"type": "cloud", "ip_range": "10.10.0.0/16", "network_zone": "eu-central"}]
        )
        ops.append(("network", {"name": "prop", "ip_range": "10.10.0.0/16", "subnets": subnets, "labels": owner}))
    if draw(st.booleans()):
        ops.append(
            (
                "firewall",
                {
                    "name": "prop-worker",
                    "labels": owner,
                    "rules": [{"direction": "in", "protocol": "tcp", "port": "8080", "source_ips": ["0.0.0.0/0"]}],
                },
            )
        )
    if draw(st.booleans()):
        ops.append(
            (
                "firewall",
                {
                    "name": "prop-registry",
                    "labels": owner,
                    "rules": [],
                    "apply_to": [{"type": "label_selector", "label_selector": {"selector": "nix-infra/cluster=prop"}}],
                },
            )
        )
    for i in range(draw(st.integers(0, 2))):
        ops.append(("placement_group", {"name": f"prop-spread-{i + 1}", "type": "spread", "labels": owner}))
    for name, node in m["nodes"].items():
        if draw(st.booleans()):  # this node's server exists already (perhaps from a run that died)
            labels = node["labels"] if draw(st.booleans()) else {**owner, "nix-infra/node": name}
            ops.append(
                (
                    "server",
                    {
                        "name": server_name("prop", name),
                        "server_type": node["serverType"],
                        "image": "debian-12",
                        "location": node["location"],
                        "labels": labels,
                    },
                )
            )
    if draw(st.booleans()):
        ops.append(
            (
                "server",
                {
                    "name": "prop-gone001",
                    "server_type": "cx22",
                    "image": "debian-12",
                    "location": "fsn1",
                    "labels": {**owner, "nix-infra/node": "gone001"},
                },
            )
        )
    for i in range(draw(st.integers(0, 3))):
        ops.append(
            (
                "server",
                {
                    "name": f"other-{i}",
                    "server_type": "cx22",
                    "image": "debian-12",
                    "location": "fsn1",
                    "labels": {"team": "other"},
                },
            )
        )
        ops.append(("firewall", {"name": f"other-fw-{i}", "rules": [], "labels": {"team": "other"}}))
    return ops


@contextlib.contextmanager
def running_fake() -> Iterator[FakeHcloud]:
    fake = FakeHcloud(token="t").start()
    try:
        yield fake
    finally:
        fake.stop()


def seed(fake: FakeHcloud, ops: list[tuple[str, dict[str, Any]]]) -> None:
    s = fake.state
    with fake.lock:
        for kind, body in ops:
            {
                "ssh_key": s.create_ssh_key,
                "network": s.create_network,
                "firewall": s.create_firewall,
                "placement_group": s.create_placement_group,
                "server": s.create_server,
            }[kind](body)


def foreign(snapshot: dict[str, list[dict[str, Any]]]) -> list[Any]:
    return [
        (kind, r["name"], r.get("labels"), r.get("rules"), r.get("status"))
        for kind in ("servers", "firewalls", "networks", "placement_groups", "ssh_keys")
        for r in snapshot[kind]
        if r.get("labels", {}).get("nix-infra/cluster") != "prop"
    ]


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_apply_reaches_desired_state_and_replans_empty(data: st.DataObject) -> None:
    m = data.draw(manifests())
    ops = data.draw(seeds(m))
    desired = desired_state(parse_manifest(m))
    with running_fake() as fake:
        seed(fake, ops)
        client = make_client("t", HcloudSettings(endpoint=fake.endpoint, poll_interval=0.005, backoff_factor=0.01))
        first = plan(desired, read_actual(client, "prop"))
        assume(not first.problems)
        before = foreign(fake.snapshot())
        Applier(client, desired, lambda _: None).apply(first)

        actual = read_actual(client, "prop")
        second = plan(desired, actual)
        assert second.changes == (), second.to_json()
        assert foreign(fake.snapshot()) == before  # nothing without our label was touched
        by_node: dict[str | None, list[Any]] = {}
        for s in actual.servers:
            by_node.setdefault(s.node, []).append(s)
        for node, spec in m["nodes"].items():
            [server] = by_node[node]  # exactly one server per node
            assert dict(server.private_nets)[actual.networks[0].id] == spec["privateIp"]
            assert dict(server.labels) == spec["labels"]
        groups = fake.snapshot()["placement_groups"]
        assert all(len(g["servers"]) <= 10 for g in groups)
