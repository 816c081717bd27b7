"""The fake Hetzner API, driven through the real hcloud client: shapes, errors, knobs."""

from __future__ import annotations

import time

import pytest
import requests
from hcloud import APIException, Client
from hcloud.firewalls import FirewallResource, FirewallResourceLabelSelector, FirewallRule
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.networks import NetworkSubnet
from hcloud.server_types import ServerType

from nix_infra.fake_hcloud import FakeHcloud
from nix_infra.fake_hcloud.selectors import SelectorError, parse_selector


def make_server(client: Client, name: str, labels: dict[str, str] | None = None, **kw: object) -> object:
    return client.servers.create(
        name=name,
        server_type=ServerType(name="cx22"),
        image=Image(name="debian-12"),
        location=Location(name="fsn1"),
        labels=labels or {},
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=1", {"a": "1"}, True),
        ("a==1", {"a": "2"}, False),
        ("a!=1", {}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": "x"}, False),
        ("a in (1,2),b", {"a": "2", "b": "x"}, True),
        ("a notin (1,2)", {"a": "3"}, True),
        ("nix-infra/cluster=demo,nix-infra/type=ctrl", {"nix-infra/cluster": "demo", "nix-infra/type": "ctrl"}, True),
        (
            "nix-infra/cluster=demo,nix-infra/type=ctrl",
            {"nix-infra/cluster": "demo", "nix-infra/type": "worker"},
            False,
        ),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector)(labels) is expected


def test_bad_selector() -> None:
    with pytest.raises(SelectorError):
        parse_selector("a in 1,2")


def test_server_lifecycle_follows_actions(client: Client, fake: FakeHcloud) -> None:
    fake.set_faults(action_seconds=0.2)
    resp = make_server(client, "web1")
    assert resp.server.status == "initializing"  # type: ignore[attr-defined]
    assert resp.action.status == "running"  # type: ignore[attr-defined]
    assert [a.command for a in resp.next_actions] == ["start_server"]  # type: ignore[attr-defined]
    resp.action.wait_until_finished()  # type: ignore[attr-defined]
    assert client.servers.get_by_name("web1").status == "running"  # type: ignore[union-attr]
    action = client.servers.delete(resp.server)  # type: ignore[attr-defined]
    assert client.servers.get_by_name("web1").status == "deleting"  # type: ignore[union-attr]
    action.wait_until_finished()
    assert client.servers.get_by_name("web1") is None


def test_pagination_beyond_one_page(client: Client, fake: FakeHcloud) -> None:
    for i in range(60):
        make_server(client, f"s{i:02d}", {"batch": "a" if i % 2 else "b"})
    assert len(client.servers.get_all()) == 60
    page = requests.get(
        f"{fake.endpoint}/servers?page=2&per_page=25", headers={"Authorization": "Bearer test-token"}, timeout=5
    ).json()
    assert len(page["servers"]) == 25
    assert page["meta"]["pagination"] == {
        "page": 2,
        "per_page": 25,
        "previous_page": 1,
        "next_page": 3,
        "last_page": 3,
        "total_entries": 60,
    }
    assert len(client.servers.get_all(label_selector="batch=a")) == 30


def test_error_shape_and_codes(client: Client, fake: FakeHcloud) -> None:
    make_server(client, "dup")
    with pytest.raises(APIException) as exc:
        make_server(client, "dup")
    assert exc.value.code == "uniqueness_error"
    with pytest.raises(APIException) as exc:
        client.servers.create(name="x", server_type=ServerType(name="nope"), image=Image(name="debian-12"))
    assert exc.value.code == "invalid_input"
    raw = requests.get(f"{fake.endpoint}/servers/999", headers={"Authorization": "Bearer test-token"}, timeout=5)
    assert raw.status_code == 404
    assert raw.json()["error"]["code"] == "not_found"
    assert set(raw.json()["error"]) == {"code", "message", "details"}
    unauth = requests.get(f"{fake.endpoint}/servers", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert (unauth.status_code, unauth.json()["error"]["code"]) == (401, "unauthorized")


def test_ssh_key_fingerprint_uniqueness(client: Client) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2 a"
    created = client.ssh_keys.create(name="one", public_key=key)
    assert created.fingerprint == "05:b2:e3:c9:6c:c9:d3:f3:a2:99:41:b0:f8:38:98:dc"
    with pytest.raises(APIException) as exc:
        client.ssh_keys.create(name="two", public_key=key)
    assert exc.value.code == "uniqueness_error"
    assert client.ssh_keys.get_by_fingerprint(created.fingerprint).name == "one"  # type: ignore[union-attr]


def test_network_attach_rules(client: Client, fake: FakeHcloud) -> None:
    net = client.networks.create(
        name="n",
        ip_range="10.10.0.0/16",
        subnets=[NetworkSubnet(type="cloud", ip_range="10.10.0.0/16", network_zone="eu-central")],
    )
    b = make_server(client, "b").server  # type: ignore[attr-defined]
    fake.set_faults(action_seconds=0.3)
    created = make_server(client, "a")
    a = created.server  # type: ignore[attr-defined]
    raw = requests.post(
        f"{fake.endpoint}/servers/{a.id}/actions/attach_to_network",
        json={"network": net.id, "ip": "10.10.32.1"},
        headers={"Authorization": "Bearer test-token"},
        timeout=5,
    )
    # the create action still runs: the server is locked
    assert (raw.status_code, raw.json()["error"]["code"]) == (423, "locked")
    created.action.wait_until_finished()  # type: ignore[attr-defined]
    fake.set_faults(action_seconds=0.0)
    client.servers.attach_to_network(a, net, ip="10.10.32.1").wait_until_finished()
    for ip, code in [
        ("10.10.32.1", "ip_not_available"),
        ("10.10.0.1", "invalid_input"),
        ("10.11.0.5", "invalid_input"),
    ]:
        with pytest.raises(APIException) as exc:
            client.servers.attach_to_network(b, net, ip=ip)
        assert exc.value.code == code, ip
    assert client.servers.get_by_id(a.id).private_net[0].ip == "10.10.32.1"  # type: ignore[index]


def test_firewall_label_selector_targets(client: Client) -> None:
    make_server(client, "c1", {"role": "ctrl"})
    make_server(client, "w1", {"role": "worker"})
    resp = client.firewalls.create(
        name="fw",
        rules=[FirewallRule(direction="in", protocol="tcp", port="22", source_ips=["203.0.113.0/24"])],
        resources=[FirewallResource(type="label_selector", label_selector=FirewallResourceLabelSelector("role=ctrl"))],
    )
    fw = client.firewalls.get_by_id(resp.firewall.id)  # type: ignore[arg-type]
    targets = fw.applied_to[0].applied_to_resources  # type: ignore[index]
    assert [t.server.id for t in targets] == [client.servers.get_by_name("c1").id]  # type: ignore[union-attr]
    assert [f.firewall.id for f in client.servers.get_by_name("c1").public_net.firewalls] == [fw.id]  # type: ignore[union-attr]
    with pytest.raises(APIException) as exc:
        client.firewalls.delete(fw)
    assert exc.value.code == "resource_in_use"


def test_placement_group_spread_limit(client: Client) -> None:
    pg = client.placement_groups.create(name="pg", type="spread").placement_group
    for i in range(10):
        make_server(client, f"p{i}", placement_group=pg)
    with pytest.raises(APIException) as exc:
        make_server(client, "p10", placement_group=pg)
    assert exc.value.code == "placement_error"


def test_resource_limit(client: Client, fake: FakeHcloud) -> None:
    fake.set_faults(server_limit=1)
    make_server(client, "one")
    with pytest.raises(APIException) as exc:
        make_server(client, "two")
    assert exc.value.code == "resource_limit_exceeded"


def test_rate_limit_knob_shape(fake: FakeHcloud) -> None:
    fake.set_faults(rate_limit_burst=1)
    r = requests.get(f"{fake.endpoint}/servers", headers={"Authorization": "Bearer test-token"}, timeout=5)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["RateLimit-Remaining"] == "0"
    assert int(r.headers["RateLimit-Reset"]) >= time.time()
    ok = requests.get(f"{fake.endpoint}/servers", headers={"Authorization": "Bearer test-token"}, timeout=5)
    assert ok.status_code == 200 and "RateLimit-Limit" in ok.headers


def test_failing_action_knob(client: Client, fake: FakeHcloud) -> None:
    fake.set_faults(fail_actions={"create_server": ["resource_unavailable", "no capacity in fsn1"]})
    resp = make_server(client, "doomed")
    with pytest.raises(Exception, match="no capacity"):
        resp.action.wait_until_finished()  # type: ignore[attr-defined]
    assert client.servers.get_by_name("doomed") is None  # Hetzner cleans up a failed create


def test_crash_knob_drops_connections(fake: FakeHcloud) -> None:
    fake.set_faults(crash_after=1)
    headers = {"Authorization": "Bearer test-token"}
    assert requests.get(f"{fake.endpoint}/servers", headers=headers, timeout=5).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{fake.endpoint}/servers", headers=headers, timeout=5)


def test_control_endpoints(fake: FakeHcloud) -> None:
    base = f"http://127.0.0.1:{fake.port}/__fake__"
    assert requests.post(f"{base}/faults", json={"server_errors": 2}, timeout=5).json()["faults"]["server_errors"] == 2
    assert requests.post(f"{base}/faults", json={"nope": 1}, timeout=5).status_code == 400
    requests.post(f"{base}/reset", timeout=5)
    assert requests.get(f"{base}/state", timeout=5).json()["servers"] == []
