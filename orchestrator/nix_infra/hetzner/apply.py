"""Carrying out a plan against the Hetzner Cloud API, and destroying.

Order: SSH keys, network, placement groups, firewalls, new servers (all
created, then all attached to the network with their manifest IP, then
protected if stateful), changes to existing servers, volumes (created in the
node's location, delete-protected, then attached; grown, relabelled,
protected, attached), then deletions. Every action is polled to completion; a
failed one is reported with the resource name and Hetzner's error code. If a
run dies half-way, the next plan starts from what exists, so a re-run finishes
the job without duplicates (servers are matched by their node label).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from hcloud import APIException, Client
from hcloud.actions import BoundAction
from hcloud.firewalls import FirewallResource, FirewallResourceLabelSelector, FirewallRule
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.networks import Network, NetworkSubnet
from hcloud.placement_groups import PlacementGroup
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer, Server, ServerCreatePublicNetwork
from hcloud.ssh_keys import SSHKey
from hcloud.volumes import Volume

from nix_infra.errors import NixInfraError
from nix_infra.facts import FactsStore, HostKey, NodeFacts, VolumeFact, generate_host_key, volume_device
from nix_infra.hetzner.client import api_errors, wait_for
from nix_infra.hetzner.model import Actual, Desired, Rule, read_actual
from nix_infra.hetzner.plan import Change, Plan

Progress = Callable[[str], None]


def _rules(rules: Iterable[Rule]) -> list[FirewallRule]:
    return [
        FirewallRule(
            direction=r.direction,
            protocol=r.protocol,
            port=r.port,
            source_ips=list(r.sources),
            description=r.description,
        )
        for r in rules
    ]


def _wait_all(pending: list[tuple[str, BoundAction]]) -> None:
    """Wait for every action; then report every failure at once, naming each resource."""
    failures = []
    for what, action in pending:
        try:
            wait_for(action, what)
        except NixInfraError as exc:
            failures.append(exc.message)
    if failures:
        raise NixInfraError("\n".join(failures))


def problems_error(plan: Plan) -> NixInfraError:
    lines = "\n".join(f"  - {p.kind} {p.name}: {p.message}" for p in plan.problems)
    return NixInfraError(f"the plan has problems that need a decision first:\n{lines}")


def cloud_init_host_key(key: HostKey) -> str:
    """cloud-init user_data that installs our SSH host key before sshd first starts, so
    the key is pinned before the first connection. JSON is YAML, so this is valid cloud-config.

    This is the *bootstrap* key of the stock image only: the metadata service keeps user
    data, so NixOS gets a second key (nixos-anywhere --extra-files) that never leaves
    the operator's machine except over the pinned connection."""
    return "#cloud-config\n" + json.dumps(
        {
            "ssh_deletekeys": True,
            "ssh_genkeytypes": [],
            "ssh_keys": {"ed25519_private": key.private_openssh, "ed25519_public": key.public},
        }
    )


@dataclass
class Applier:
    client: Client
    desired: Desired
    progress: Progress
    facts: FactsStore | None = None  # where to record each new server's address and host key
    ssh_port: int = 22

    def apply(self, plan: Plan) -> None:
        if plan.problems:
            raise problems_error(plan)
        owner = dict(self.desired.owner)
        keys = {k.name: k for k in self.desired.ssh_keys}
        for c in plan.of("create", "ssh_key"):
            with api_errors(f"ssh key {c.name}"):
                try:
                    self.client.ssh_keys.create(name=c.name, public_key=keys[c.name].public_key, labels=owner)
                except APIException as exc:
                    if exc.code != "uniqueness_error":
                        raise
                    # a lost answer from an earlier run: the key is there already
            self.progress(f"+ ssh key {c.name}")

        dn = self.desired.network
        subnet = NetworkSubnet(type="cloud", ip_range=dn.subnet, network_zone=dn.zone)
        for c in plan.of("create", "network"):
            with api_errors(f"network {c.name}"):
                self.client.networks.create(name=dn.name, ip_range=dn.ip_range, subnets=[subnet], labels=owner)
            self.progress(f"+ network {c.name} {dn.ip_range}")
        for c in plan.of("update", "network"):
            with api_errors(f"network {c.name}"):
                action = self.client.networks.add_subnet(Network(id=c.rid), subnet)
            wait_for(action, f"network {c.name}")
            self.progress(f"~ network {c.name}: subnet {dn.subnet} in {dn.zone}")

        for c in plan.of("create", "placement_group"):
            with api_errors(f"placement group {c.name}"):
                self.client.placement_groups.create(name=c.name, type="spread", labels=owner)
            self.progress(f"+ placement group {c.name}")

        firewalls = {f.name: f for f in self.desired.firewalls}
        for c in plan.of("create", "firewall"):
            f = firewalls[c.name]
            with api_errors(f"firewall {c.name}"):
                resp = self.client.firewalls.create(
                    name=f.name,
                    rules=_rules(f.rules),
                    labels=owner,  # type: ignore[arg-type]
                    resources=[
                        FirewallResource(
                            type="label_selector", label_selector=FirewallResourceLabelSelector(f.selector)
                        )
                    ],
                )
            _wait_all([(f"firewall {c.name}", a) for a in resp.actions or []])
            self.progress(f"+ firewall {c.name}")
        for c in plan.of("update", "firewall"):
            self._update_firewall(c)

        if plan.of("create", "server") or plan.of("update", "server"):
            actual = read_actual(self.client, self.desired.cluster)
            self._create_servers(plan.of("create", "server"), actual)
            self._update_servers(plan.of("update", "server"), actual)
        if plan.of("create", "volume") or plan.of("update", "volume"):
            actual = read_actual(self.client, self.desired.cluster)  # the servers just created
            self._create_volumes(plan.of("create", "volume"), actual)
            self._update_volumes(plan.of("update", "volume"), actual)

        for c in plan.of("delete", "firewall"):
            delete_firewall(self.client, c.name, c.rid, self.progress)
        for c in plan.of("delete", "placement_group"):
            with api_errors(f"placement group {c.name}"):
                self.client.placement_groups.delete(PlacementGroup(id=c.rid))
            self.progress(f"- placement group {c.name}")
        for c in plan.of("delete", "ssh_key"):
            with api_errors(f"ssh key {c.name}"):
                self.client.ssh_keys.delete(SSHKey(id=c.rid))
            self.progress(f"- ssh key {c.name}")
        for c in plan.of("delete", "network"):
            with api_errors(f"network {c.name}"):
                self.client.networks.delete(Network(id=c.rid))
            self.progress(f"- network {c.name}")

    def _update_firewall(self, c: Change) -> None:
        f = next(x for x in self.desired.firewalls if x.name == c.name)
        what = f"firewall {c.name}"
        fw = self.client.firewalls.get_by_id(c.rid)
        pending = []
        with api_errors(what):
            if "rules" in c.fields:
                pending += [(what, a) for a in fw.set_rules(_rules(f.rules))]
            if "apply_to" in c.fields:
                stale = [
                    r
                    for r in fw.applied_to or []
                    if not (
                        r.type == "label_selector"
                        and r.label_selector is not None
                        and r.label_selector.selector == f.selector
                    )
                ]
                if stale:
                    pending += [
                        (what, a)
                        for a in fw.remove_from_resources(
                            [
                                FirewallResource(type=r.type, server=r.server, label_selector=r.label_selector)
                                for r in stale
                            ]
                        )
                    ]
                if len(stale) == len(fw.applied_to or []):
                    pending += [
                        (what, a)
                        for a in fw.apply_to_resources(
                            [
                                FirewallResource(
                                    type="label_selector", label_selector=FirewallResourceLabelSelector(f.selector)
                                )
                            ]
                        )
                    ]
        _wait_all(pending)
        self.progress(f"~ firewall {c.name}: {', '.join(c.fields)}")

    def _network_id(self, actual: Actual) -> int:
        net = next((n for n in actual.networks if n.name == self.desired.network.name), None)
        if net is None:
            raise NixInfraError(f"network {self.desired.network.name} disappeared while provisioning; re-run")
        return net.id

    def _create_servers(self, creates: list[Change], actual: Actual) -> None:
        if not creates:
            return
        key_ids = [k.id for k in actual.ssh_keys if k.fingerprint in {d.fingerprint for d in self.desired.ssh_keys}]
        groups = {g.name: g.id for g in actual.placement_groups}
        network_id = self._network_id(actual)
        created: list[tuple[Change, Server]] = []
        pending: list[tuple[str, BoundAction]] = []
        host_keys: dict[str, HostKey] = {}
        for c in creates:
            what = f"server {c.name}"
            f = c.fields
            host_keys[c.name] = key = generate_host_key()
            # the key is on disk (public half) before the server exists: a run killed right
            # after the create still knows what to pin; the next run fills in the address
            self._record_key(c.fields["node"], key)
            with api_errors(what):
                try:
                    resp = self.client.servers.create(
                        user_data=cloud_init_host_key(key),
                        name=c.name,
                        server_type=ServerType(name=f["server_type"]),
                        image=Image(name=f["image"]),
                        location=Location(name=f["location"]),
                        ssh_keys=[SSHKey(id=i) for i in key_ids],
                        labels=dict(f["labels"]),
                        placement_group=PlacementGroup(id=groups[f["placement_group"]]),
                        start_after_create=True,
                        public_net=ServerCreatePublicNetwork(enable_ipv4=True, enable_ipv6=True),
                    )
                except APIException as exc:
                    adopted = self._adopt_after_lost_answer(exc, c)
                    if adopted is None:
                        raise
                    created.append((c, adopted))
                    continue
            created.append((c, resp.server))
            self._record_facts(c, resp.server, host_keys[c.name])
            pending += [(what, resp.action), *((what, a) for a in resp.next_actions or [])]
            self.progress(f"+ server {c.name} ({f['server_type']}, {f['location']}) requested")
        _wait_all(pending)
        attach = []
        for c, server in created:
            what = f"server {c.name}"
            with api_errors(what):
                attach.append(
                    (
                        what,
                        self.client.servers.attach_to_network(
                            server, Network(id=network_id), ip=c.fields["private_ip"]
                        ),
                    )
                )
        _wait_all(attach)
        for c, _ in created:
            self.progress(f"+ server {c.name} running, private IP {c.fields['private_ip']}")
        protect = []
        for c, server in created:
            if c.fields.get("protect"):
                with api_errors(f"server {c.name}"):
                    protect.append(
                        (f"server {c.name}", self.client.servers.change_protection(server, delete=True, rebuild=True))
                    )
        _wait_all(protect)
        for c, _ in created:
            if c.fields.get("protect"):
                self.progress(f"~ server {c.name}: delete and rebuild protection on (stateful)")

    def _record_key(self, node: str, key: HostKey) -> None:
        if self.facts is not None:
            self.facts.write(
                NodeFacts(node=node, host_key=key.public, public_ipv4=None, ssh_port=self.ssh_port, installed=False)
            )

    def _record_facts(self, c: Change, server: BoundServer, key: HostKey) -> None:
        """Pin the new server's host key and address at once, before anything connects to it."""
        if self.facts is None:
            return
        net = server.public_net
        ipv4 = net.ipv4.ip if net and net.ipv4 else None
        if ipv4 is None:
            raise NixInfraError(f"server {c.name} has no public IPv4 address")
        ipv6 = net.ipv6.ip if net and net.ipv6 else None
        self.facts.write(
            NodeFacts(
                node=c.fields["node"],
                host_key=key.public,
                public_ipv4=ipv4,
                public_ipv6=ipv6,
                ssh_port=self.ssh_port,
                installed=False,  # a stock image with the bootstrap key; deploy installs NixOS
            )
        )

    def _adopt_after_lost_answer(self, exc: APIException, c: Change) -> BoundServer | None:
        """A uniqueness error for a server this run just asked for: an earlier answer was lost."""
        if exc.code != "uniqueness_error":
            return None
        server = self.client.servers.get_by_name(c.name)
        if server is None or dict(server.labels or {}).get("nix-infra/node") != c.fields["node"]:
            return None
        deadline = time.monotonic() + 600
        while server.status == "initializing" and time.monotonic() < deadline:
            time.sleep(self.client._client._poll_interval_func(1))
            server = self.client.servers.get_by_id(server.data_model.id or 0)
        return server

    def _update_servers(self, updates: list[Change], actual: Actual) -> None:
        if not updates:
            return
        network_id = self._network_id(actual)
        pending: list[tuple[str, BoundAction]] = []
        for c in updates:
            what = f"server {c.name}"
            server = Server(id=c.rid)
            with api_errors(what):
                if "labels" in c.fields or "name" in c.fields:
                    self.client.servers.update(
                        server, name=c.name, labels=c.fields["labels"][1] if "labels" in c.fields else None
                    )
                if "protection" in c.fields:
                    want = c.fields["protection"][1]
                    pending.append(
                        (
                            what,
                            self.client.servers.change_protection(
                                server, delete=want["delete"], rebuild=want["rebuild"]
                            ),
                        )
                    )
                if "private_ip" in c.fields:
                    old, new = c.fields["private_ip"]
                    if old is not None:
                        wait_for(self.client.servers.detach_from_network(server, Network(id=network_id)), what)
                    pending.append(
                        (what, self.client.servers.attach_to_network(server, Network(id=network_id), ip=new))
                    )
            self.progress(f"~ server {c.name}: {', '.join(c.fields)}")
        _wait_all(pending)

    def _server_id(self, actual: Actual, node: str, what: str) -> int:
        server = next((s for s in actual.servers if s.node == node), None)
        if server is None:
            raise NixInfraError(f"{what}: node {node} has no server to attach it to; re-run provision")
        return server.id

    def _create_volumes(self, creates: list[Change], actual: Actual) -> None:
        """Create each volume in its node's location, protect it, then attach it (a cut-off run
        leaves a labelled volume the next plan finds: protected and attached then, never made twice)."""
        if not creates:
            return
        created: list[tuple[Change, int]] = []
        pending: list[tuple[str, BoundAction]] = []
        for c in creates:
            f = c.fields
            what = f"volume {c.name}"
            with api_errors(what):
                resp = self.client.volumes.create(
                    size=f["size"],
                    name=c.name,
                    labels=dict(f["labels"]),  # type: ignore[arg-type]
                    location=Location(name=f["location"]),
                    automount=False,
                    format=f["format"],
                )
            vid = resp.volume.id
            if vid is None:
                raise NixInfraError(f"{what}: the Hetzner API answered a volume without an id")
            created.append((c, vid))
            pending += [(what, resp.action), *((what, a) for a in resp.next_actions or [])]
            self.progress(f"+ volume {c.name} ({f['size']} GB {f['format']}, {f['location']}) requested")
        _wait_all(pending)
        protect = []
        for c, vid in created:
            with api_errors(f"volume {c.name}"):
                protect.append((f"volume {c.name}", self.client.volumes.change_protection(Volume(id=vid), delete=True)))
        _wait_all(protect)
        attach = []
        for c, vid in created:
            what = f"volume {c.name}"
            server_id = self._server_id(actual, c.fields["node"], what)
            with api_errors(what):
                attach.append((what, self.client.volumes.attach(Volume(id=vid), Server(id=server_id), automount=False)))
        _wait_all(attach)
        for c, vid in created:
            self.progress(f"+ volume {c.name} (id {vid}) delete-protected, attached to {c.fields['server']}")

    def _update_volumes(self, updates: list[Change], actual: Actual) -> None:
        pending: list[tuple[str, BoundAction]] = []
        for c in updates:
            what = f"volume {c.name}"
            volume = Volume(id=c.rid)
            with api_errors(what):
                if "labels" in c.fields or "name" in c.fields:
                    self.client.volumes.update(
                        volume, name=c.name, labels=c.fields["labels"][1] if "labels" in c.fields else None
                    )
                if "protection" in c.fields:
                    pending.append((what, self.client.volumes.change_protection(volume, delete=True)))
                if "size" in c.fields:
                    pending.append((what, self.client.volumes.resize(volume, c.fields["size"][1])))
                if "server" in c.fields:
                    node = next(d.node for d in self.desired.volumes if d.name == c.name)
                    server = Server(id=self._server_id(actual, node, what))
                    pending.append((what, self.client.volumes.attach(volume, server, automount=False)))
            self.progress(f"~ volume {c.name}: {', '.join(c.fields)}")
        _wait_all(pending)


def volume_facts(desired: Desired, actual: Actual) -> dict[str, dict[str, VolumeFact]]:
    """Each desired node's volumes as the cloud has them: node -> volume -> {id, device}."""
    wanted = {(d.node, d.volume) for d in desired.volumes}
    out: dict[str, dict[str, VolumeFact]] = {d.node: {} for d in desired.servers}
    for v in actual.volumes:
        if v.node is not None and v.volume is not None and (v.node, v.volume) in wanted:
            out.setdefault(v.node, {})[v.volume] = VolumeFact(id=v.id, linux_device=volume_device(v.id))
    return out


def complete_facts(facts: FactsStore, desired: Desired, actual: Actual, progress: Progress) -> list[str]:
    """Fill in the address of servers whose creation was cut off; return the nodes whose
    servers exist without any facts (their host keys are unknown)."""
    wanted = {d.node for d in desired.servers}
    unknown = []
    for server in actual.servers:
        if server.node is None or server.node not in wanted:
            continue
        known = facts.read(server.node)
        if known is None:
            unknown.append(server.node)
        elif known.public_ipv4 is None and server.public_ipv4 is not None:
            facts.write(replace(known, public_ipv4=server.public_ipv4, public_ipv6=server.public_ipv6))
            progress(f"~ facts of {server.node}: address {server.public_ipv4}")
        elif known.public_ipv4 is not None and not facts.is_pinned(known):
            facts.write(known)  # a run written by an older nix-infra was cut off before pinning
            progress(f"~ known_hosts: pinned {server.node}")
    # every volume's id, for the NixOS side (/dev/disk/by-id/scsi-0HC_Volume_<id>)
    for node, volumes in volume_facts(desired, actual).items():
        known = facts.read(node)
        if known is not None and dict(known.volumes) != volumes:
            facts.write(replace(known, volumes=volumes))
            shown = ", ".join(f"{name} id {v.id}" for name, v in sorted(volumes.items())) or "none"
            progress(f"~ facts of {node}: volumes {shown}")
    return unknown


def _forget_destroyed(
    client: Client,
    cluster: str,
    facts: FactsStore,
    nodes: list[str] | None,
    victims: list[tuple[str, str]],
    progress: Progress,
) -> None:
    """Forget the facts and host-key pins of nodes whose servers are gone, verified by reading
    the project again: a node that still has a server keeps its pin. `victims`: the deleted
    servers as (server name, node)."""
    remaining = {s.node for s in read_actual(client, cluster).servers}
    still = sorted(name for name, node in victims if node in remaining)
    if still:
        raise NixInfraError(
            f"servers {', '.join(still)} were deleted but the project still lists them; "
            "their facts are kept: run destroy again"
        )
    wanted = nodes if nodes is not None else facts.nodes()
    for node in wanted:
        if node in remaining or not facts.knows(node):
            continue
        facts.forget(node)
        progress(f"- facts and pinned host key of {node}")


def delete_firewall(client: Client, name: str, fid: int, progress: Progress) -> None:
    """Detach a firewall from everything it applies to, then delete it."""
    what = f"firewall {name}"
    with api_errors(what):
        fw = client.firewalls.get_by_id(fid)
        if fw.applied_to:
            _wait_all(
                [
                    (what, a)
                    for a in fw.remove_from_resources(
                        [
                            FirewallResource(type=r.type, server=r.server, label_selector=r.label_selector)
                            for r in fw.applied_to
                        ]
                    )
                ]
            )
        client.firewalls.delete(fw)
    progress(f"- firewall {name}")


def apply_destroy(
    client: Client,
    plan: Plan,
    progress: Progress,
    facts: FactsStore | None = None,
    nodes: list[str] | None = None,
) -> list[str]:
    """Carry out a destroy plan (plan.destroy_plan): protection off, then servers (their volumes
    are detached by Hetzner and kept), then volumes (detached, deleted), then with --all the rest.
    With `facts`, once the project no longer lists the deleted servers, the facts and pinned host
    keys of `nodes` (None: every node) whose servers are gone are forgotten. Resumable: a re-run
    plans from what is left. Returns the names of the deleted servers."""
    if plan.problems:
        raise problems_error(plan)
    servers = plan.of("delete", "server")
    volumes = plan.of("delete", "volume")
    unprotect = []
    for c in servers:
        if c.fields.get("protected"):
            with api_errors(f"server {c.name}"):
                unprotect.append(
                    (
                        f"server {c.name}",
                        client.servers.change_protection(Server(id=c.rid), delete=False, rebuild=False),
                    )
                )
    for c in volumes:
        if c.fields.get("protected"):
            with api_errors(f"volume {c.name}"):
                unprotect.append((f"volume {c.name}", client.volumes.change_protection(Volume(id=c.rid), delete=False)))
    _wait_all(unprotect)
    pending = []
    for c in servers:
        with api_errors(f"server {c.name}"):
            pending.append((f"server {c.name}", client.servers.delete(Server(id=c.rid))))
    _wait_all(pending)
    for c in servers:
        progress(f"- server {c.name}")
    if facts is not None:
        _forget_destroyed(
            client, plan.cluster, facts, nodes, [(c.name, str(c.fields.get("node"))) for c in servers], progress
        )
    detach = []
    for c in volumes:
        with api_errors(f"volume {c.name}"):
            current = client.volumes.get_by_id(c.rid)
            if current.server is not None:
                detach.append((f"volume {c.name}", client.volumes.detach(current)))
    _wait_all(detach)
    for c in volumes:
        with api_errors(f"volume {c.name}"):
            client.volumes.delete(Volume(id=c.rid))
        progress(f"- volume {c.name} ({c.fields.get('size')} GB, its data is gone)")
    for c in plan.of("delete", "firewall"):
        delete_firewall(client, c.name, c.rid, progress)
    for c in plan.of("delete", "placement_group"):
        with api_errors(f"placement group {c.name}"):
            client.placement_groups.delete(PlacementGroup(id=c.rid))
        progress(f"- placement group {c.name}")
    for c in plan.of("delete", "network"):
        with api_errors(f"network {c.name}"):
            client.networks.delete(Network(id=c.rid))
        progress(f"- network {c.name}")
    for c in plan.of("delete", "ssh_key"):
        with api_errors(f"ssh key {c.name}"):
            client.ssh_keys.delete(SSHKey(id=c.rid))
        progress(f"- ssh key {c.name}")
    for note in plan.notes:
        progress(f"  {note}")
    return [c.name for c in servers]
