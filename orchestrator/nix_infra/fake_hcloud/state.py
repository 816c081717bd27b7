"""The fake's state: Hetzner Cloud resources as the public API shapes them.

Every operation runs under the caller's lock and raises ApiError with the
API's error code; resources are kept as the JSON the API returns, plus a few
private fields (prefixed `_`) that never leave the fake.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nix_infra.fake_hcloud.selectors import SelectorError, parse_selector

Json = dict[str, Any]

STATUS = {
    "invalid_input": 400,
    "json_error": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "protected": 403,
    "resource_limit_exceeded": 403,
    "not_found": 404,
    "uniqueness_error": 409,
    "conflict": 409,
    "ip_not_available": 409,
    "server_already_attached": 409,
    "volume_already_attached": 409,
    "firewall_already_applied": 409,
    "firewall_already_removed": 409,
    "placement_error": 412,
    "resource_in_use": 422,
    "locked": 423,
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "service_error": 503,
    "maintenance": 503,
}

LOCATIONS = {
    "fsn1": ("eu-central", "DE", "Falkenstein"),
    "nbg1": ("eu-central", "DE", "Nuremberg"),
    "hel1": ("eu-central", "FI", "Helsinki"),
    "ash": ("us-east", "US", "Ashburn, VA"),
    "hil": ("us-west", "US", "Hillsboro, OR"),
    "sin": ("ap-southeast", "SG", "Singapore"),
}
SERVER_TYPES = {  # name: (cores, memory GB, disk GB, architecture)
    "cx22": (2, 4.0, 40, "x86"),
    "cx32": (4, 8.0, 80, "x86"),
    "cx42": (8, 16.0, 160, "x86"),
    "cx52": (16, 32.0, 320, "x86"),
    "cpx11": (2, 2.0, 40, "x86"),
    "cpx21": (3, 4.0, 80, "x86"),
    "cpx31": (4, 8.0, 160, "x86"),
    "cpx41": (8, 16.0, 240, "x86"),
    "cpx51": (16, 32.0, 360, "x86"),
    "cax11": (2, 4.0, 40, "arm"),
    "cax21": (4, 8.0, 80, "arm"),
    "cax31": (8, 16.0, 160, "arm"),
}
IMAGES = ["debian-12", "debian-13", "ubuntu-22.04", "ubuntu-24.04"]
SPREAD_LIMIT = 10
VOLUME_SIZE_MIN, VOLUME_SIZE_MAX = 10, 10240  # GB
VOLUME_FORMATS = ("ext4", "xfs")
# used with fullmatch only: `^...$` with match would take "name\n"
LABEL_KEY = re.compile(
    r"(([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
HOSTNAME = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*")


class ApiError(Exception):
    def __init__(self, code: str, message: str, details: Json | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.status = STATUS.get(code, 400)

    def body(self) -> Json:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


@dataclass
class Faults:
    """Knobs that make the fake misbehave, as the real API sometimes does."""

    rate_limit_burst: int = 0  # the next N requests answer 429 rate_limit_exceeded
    rate_limit_reset_seconds: int = 1  # RateLimit-Reset = now + this
    server_errors: int = 0  # the next N requests answer a 5xx
    server_error_status: int = 503  # 500 server_error or 503 service_error
    action_seconds: float = 0.0  # how long every action runs
    fail_actions: dict[str, list[str]] = field(default_factory=dict)  # command -> [code, message]
    crash_after: int | None = None  # after N more requests, drop every connection
    crash_loses_response: bool = False  # the first dropped request is still carried out
    server_limit: int = 100  # resource_limit_exceeded beyond this many servers
    latency_seconds: float = 0.0  # every API request takes at least this long

    def update(self, values: Json) -> None:
        for key, value in values.items():
            if not hasattr(self, key):
                raise ApiError("invalid_input", f"unknown fault knob {key!r}")
            setattr(self, key, value)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def public(resource: Json) -> Json:
    return {k: v for k, v in resource.items() if not k.startswith("_")}


def ssh_fingerprint(public_key: str) -> str:
    """MD5 fingerprint of an OpenSSH public key, as Hetzner shows it (aa:bb:...).

    Deliberately not shared with nix_infra.hetzner.model.ssh_fingerprint: the fake
    computes what the real API would, so a bug in one cannot hide in both."""
    parts = public_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError) as exc:
        raise ApiError("invalid_input", "invalid public key") from exc
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def check_labels(labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise ApiError("invalid_input", "labels must be an object", {"fields": [{"name": "labels"}]})
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key) or not isinstance(value, str) or not LABEL_VALUE.fullmatch(value):
            raise ApiError(
                "invalid_input",
                f"invalid label {key}={value!r}",
                {"fields": [{"name": "labels", "messages": ["invalid label"]}]},
            )
    return dict(labels)


class ServerHooks(Protocol):
    """Lets a test harness give fake servers a life: an address, a boot, a deletion."""

    def allocate_ipv4(self, server_id: int) -> str: ...

    def boot(self, server: Json, authorized_keys: list[str], user_data: str | None) -> None: ...

    def delete(self, server: Json) -> None: ...


class FakeState:
    """All resources of one fake project."""

    def __init__(self, faults: Faults, hooks: ServerHooks | None = None) -> None:
        self.faults = faults
        self.hooks = hooks
        self._ids = itertools.count(1)
        self.servers: dict[int, Json] = {}
        self.networks: dict[int, Json] = {}
        self.firewalls: dict[int, Json] = {}
        self.placement_groups: dict[int, Json] = {}
        self.ssh_keys: dict[int, Json] = {}
        self.volumes: dict[int, Json] = {}
        self.actions: dict[int, Json] = {}

    # ---- helpers ---------------------------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    def collection(self, kind: str) -> dict[int, Json]:
        collections: dict[str, dict[int, Json]] = {
            "servers": self.servers,
            "networks": self.networks,
            "firewalls": self.firewalls,
            "placement_groups": self.placement_groups,
            "ssh_keys": self.ssh_keys,
            "volumes": self.volumes,
            "actions": self.actions,
        }
        return collections[kind]

    def get(self, kind: str, rid: Any) -> Json:
        try:
            return self.collection(kind)[int(rid)]
        except (KeyError, ValueError, TypeError):
            raise ApiError("not_found", f"{kind[:-1].replace('_', ' ')} with ID '{rid}' not found") from None

    def unique_name(self, kind: str, name: Any, exclude: int | None = None) -> str:
        if not isinstance(name, str) or not name:
            raise ApiError(
                "invalid_input",
                "invalid input in field 'name'",
                {"fields": [{"name": "name", "messages": ["Missing data for required field."]}]},
            )
        for rid, res in self.collection(kind).items():
            if res["name"] == name and rid != exclude:
                raise ApiError("uniqueness_error", "name is already used", {"fields": [{"name": "name"}]})
        return name

    def action(
        self,
        command: str,
        resources: list[tuple[int, str]],
        on_success: Callable[[], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> Json:
        aid = self.next_id()
        act: Json = {
            "id": aid,
            "command": command,
            "status": "running",
            "progress": 0,
            "started": now_iso(),
            "finished": None,
            "resources": [{"id": rid, "type": rtype} for rid, rtype in resources],
            "error": None,
            "_due": time.monotonic() + self.faults.action_seconds,
            "_on_success": on_success,
            "_on_error": on_error,
        }
        self.actions[aid] = act
        return act

    def tick(self) -> None:
        """Finish the actions whose time has come (success, or the failure a knob asks for)."""
        now = time.monotonic()
        for act in self.actions.values():
            if act["status"] != "running" or act["_due"] > now:
                continue
            failure = self.faults.fail_actions.get(act["command"])
            act["finished"] = now_iso()
            act["progress"] = 100
            if failure:
                act["status"] = "error"
                act["error"] = {"code": failure[0], "message": failure[1]}
                if act["_on_error"]:
                    act["_on_error"]()
            else:
                act["status"] = "success"
                if act["_on_success"]:
                    act["_on_success"]()

    def locked(self, rid: int, rtype: str) -> bool:
        return any(
            a["status"] == "running" and {"id": rid, "type": rtype} in a["resources"] for a in self.actions.values()
        )

    def list_items(self, kind: str, query: dict[str, str]) -> list[Json]:
        items = [self.render(kind, r) for r in self.collection(kind).values()]
        if "name" in query:
            items = [i for i in items if i.get("name") == query["name"]]
        if "label_selector" in query:
            try:
                match = parse_selector(query["label_selector"])
            except SelectorError as exc:
                raise ApiError("invalid_input", str(exc)) from None
            items = [i for i in items if match(i.get("labels", {}))]
        if "fingerprint" in query:
            items = [i for i in items if i.get("fingerprint") == query["fingerprint"]]
        if "status" in query:
            items = [i for i in items if i.get("status") == query["status"]]
        if "id" in query:
            items = [i for i in items if str(i.get("id")) == query["id"]]
        return sorted(items, key=lambda i: i["id"])

    def render(self, kind: str, res: Json) -> Json:
        out = public(res)
        if kind == "servers":
            out["public_net"]["firewalls"] = [
                {"id": fw["id"], "status": "applied"}
                for fw in self.firewalls.values()
                if res["id"] in self.firewall_targets(fw)
            ]
            pg = res["_placement_group"]
            out["placement_group"] = (
                self.render("placement_groups", self.placement_groups[pg]) if pg in self.placement_groups else None
            )
            out["volumes"] = sorted(v["id"] for v in self.volumes.values() if v["server"] == res["id"])
        elif kind == "firewalls":
            out["applied_to"] = []
            for target in res["applied_to"]:
                entry = dict(target)
                if target["type"] == "label_selector":
                    match = parse_selector(target["label_selector"]["selector"])
                    entry["applied_to_resources"] = [
                        {"type": "server", "server": {"id": s["id"]}}
                        for s in self.servers.values()
                        if match(s["labels"])
                    ]
                out["applied_to"].append(entry)
        elif kind == "placement_groups":
            out["servers"] = sorted(s["id"] for s in self.servers.values() if s["_placement_group"] == res["id"])
        elif kind == "networks":
            out["servers"] = sorted(
                s["id"] for s in self.servers.values() if any(p["network"] == res["id"] for p in s["private_net"])
            )
        return out

    def firewall_targets(self, fw: Json) -> set[int]:
        ids: set[int] = set()
        for target in fw["applied_to"]:
            if target["type"] == "server":
                ids.add(target["server"]["id"])
            else:
                match = parse_selector(target["label_selector"]["selector"])
                ids |= {s["id"] for s in self.servers.values() if match(s["labels"])}
        return ids

    # ---- SSH keys ----------------------------------------------------------------------------
    def create_ssh_key(self, body: Json) -> Json:
        name = self.unique_name("ssh_keys", body.get("name"))
        key = body.get("public_key")
        if not isinstance(key, str):
            raise ApiError("invalid_input", "invalid input in field 'public_key'")
        fp = ssh_fingerprint(key)
        if any(k["fingerprint"] == fp for k in self.ssh_keys.values()):
            raise ApiError(
                "uniqueness_error",
                "SSH key with the same fingerprint already exists",
                {"fields": [{"name": "public_key"}]},
            )
        kid = self.next_id()
        self.ssh_keys[kid] = {
            "id": kid,
            "name": name,
            "fingerprint": fp,
            "public_key": key,
            "labels": check_labels(body.get("labels")),
            "created": now_iso(),
        }
        return {"ssh_key": self.render("ssh_keys", self.ssh_keys[kid])}

    # ---- networks ----------------------------------------------------------------------------
    def create_network(self, body: Json) -> Json:
        name = self.unique_name("networks", body.get("name"))
        try:
            ip_range = ipaddress.ip_network(body.get("ip_range", ""))
        except ValueError:
            raise ApiError("invalid_input", "invalid input in field 'ip_range'") from None
        if not ip_range.is_private or ip_range.version != 4 or not 8 <= ip_range.prefixlen <= 24:
            raise ApiError("invalid_input", "ip_range must be a private IPv4 network between /8 and /24")
        nid = self.next_id()
        subnets: list[Json] = []
        for sub in body.get("subnets") or []:
            subnets.append(self._subnet(ip_range, sub, subnets))
        self.networks[nid] = {
            "id": nid,
            "name": name,
            "ip_range": str(ip_range),
            "subnets": subnets,
            "routes": [],
            "servers": [],
            "load_balancers": [],
            "protection": {"delete": False},
            "labels": check_labels(body.get("labels")),
            "created": now_iso(),
            "expose_routes_to_vswitch": False,
        }
        return {"network": self.render("networks", self.networks[nid])}

    def _subnet(self, net: Any, sub: Json, existing: list[Json]) -> Json:
        try:
            rng = ipaddress.ip_network(sub.get("ip_range", ""))
        except ValueError:
            raise ApiError("invalid_input", "invalid subnet ip_range") from None
        zone = sub.get("network_zone")
        if sub.get("type") not in ("cloud", "server", "vswitch") or zone not in {z for z, _, _ in LOCATIONS.values()}:
            raise ApiError("invalid_input", "invalid subnet type or network_zone")
        if not rng.subnet_of(net) or any(rng.overlaps(ipaddress.ip_network(s["ip_range"])) for s in existing):
            raise ApiError("invalid_input", "subnet ip_range must lie in the network and not overlap")
        return {
            "type": sub["type"],
            "ip_range": str(rng),
            "network_zone": zone,
            "gateway": str(next(net.hosts())),
            "vswitch_id": None,
        }

    def network_action(self, nid: Any, command: str, body: Json) -> Json:
        net = self.get("networks", nid)
        if command != "add_subnet":
            raise ApiError("not_found", f"unknown network action {command}")
        net["subnets"].append(self._subnet(ipaddress.ip_network(net["ip_range"]), body, net["subnets"]))
        return {"action": public(self.action("add_subnet", [(net["id"], "network")]))}

    def delete_network(self, nid: Any) -> None:
        net = self.get("networks", nid)
        for server in self.servers.values():
            server["private_net"] = [p for p in server["private_net"] if p["network"] != net["id"]]
        del self.networks[net["id"]]

    # ---- placement groups --------------------------------------------------------------------
    def create_placement_group(self, body: Json) -> Json:
        name = self.unique_name("placement_groups", body.get("name"))
        if body.get("type") != "spread":
            raise ApiError("invalid_input", "placement group type must be 'spread'")
        pid = self.next_id()
        self.placement_groups[pid] = {
            "id": pid,
            "name": name,
            "type": "spread",
            "servers": [],
            "labels": check_labels(body.get("labels")),
            "created": now_iso(),
        }
        return {"placement_group": self.render("placement_groups", self.placement_groups[pid]), "action": None}

    def delete_placement_group(self, pid: Any) -> None:
        pg = self.get("placement_groups", pid)
        for server in self.servers.values():
            if server["_placement_group"] == pg["id"]:
                server["_placement_group"] = None
        del self.placement_groups[pg["id"]]

    # ---- firewalls ---------------------------------------------------------------------------
    def _rules(self, rules: Any) -> list[Json]:
        if not isinstance(rules, list):
            raise ApiError("invalid_input", "rules must be a list")
        out = []
        for rule in rules:
            direction, protocol = rule.get("direction"), rule.get("protocol")
            if direction not in ("in", "out") or protocol not in ("tcp", "udp", "icmp", "esp", "gre"):
                raise ApiError("invalid_input", "invalid rule direction or protocol")
            port = rule.get("port")
            if protocol in ("tcp", "udp") and not (
                isinstance(port, str) and re.fullmatch(r"[0-9]+(-[0-9]+)?|any", port, re.ASCII)
            ):
                raise ApiError("invalid_input", "tcp and udp rules need a port")
            ips_field = "source_ips" if direction == "in" else "destination_ips"
            ips = rule.get(ips_field) or []
            for ip in ips:
                try:
                    ipaddress.ip_network(ip)
                except ValueError:
                    raise ApiError("invalid_input", f"invalid {ips_field} entry {ip!r}") from None
            if not ips:
                raise ApiError("invalid_input", f"{ips_field} must not be empty")
            out.append(
                {
                    "direction": direction,
                    "protocol": protocol,
                    "port": port if protocol in ("tcp", "udp") else None,
                    "source_ips": ips if direction == "in" else [],
                    "destination_ips": ips if direction == "out" else [],
                    "description": rule.get("description"),
                }
            )
        return out

    def _apply_to(self, entries: Any) -> list[Json]:
        out = []
        for entry in entries or []:
            if entry.get("type") == "server":
                self.get("servers", (entry.get("server") or {}).get("id"))
                out.append({"type": "server", "server": {"id": int(entry["server"]["id"])}})
            elif entry.get("type") == "label_selector":
                selector = (entry.get("label_selector") or {}).get("selector", "")
                try:
                    parse_selector(selector)
                except SelectorError as exc:
                    raise ApiError("invalid_input", str(exc)) from None
                out.append({"type": "label_selector", "label_selector": {"selector": selector}})
            else:
                raise ApiError("invalid_input", "apply_to entries have type server or label_selector")
        return out

    def create_firewall(self, body: Json) -> Json:
        name = self.unique_name("firewalls", body.get("name"))
        rules = self._rules(body.get("rules") or [])
        apply_to = self._apply_to(body.get("apply_to"))
        fid = self.next_id()
        self.firewalls[fid] = {
            "id": fid,
            "name": name,
            "labels": check_labels(body.get("labels")),
            "created": now_iso(),
            "rules": rules,
            "applied_to": apply_to,
        }
        actions = [self.action("apply_firewall", [(fid, "firewall")])] if apply_to else []
        return {"firewall": self.render("firewalls", self.firewalls[fid]), "actions": [public(a) for a in actions]}

    def firewall_action(self, fid: Any, command: str, body: Json) -> Json:
        fw = self.get("firewalls", fid)
        if command == "set_rules":
            fw["rules"] = self._rules(body.get("rules"))
            act = self.action("set_firewall_rules", [(fw["id"], "firewall")])
        elif command == "apply_to_resources":
            for entry in self._apply_to(body.get("apply_to")):
                if entry in fw["applied_to"]:
                    raise ApiError("firewall_already_applied", "firewall is already applied to the resource")
                fw["applied_to"].append(entry)
            act = self.action("apply_firewall", [(fw["id"], "firewall")])
        elif command == "remove_from_resources":
            for entry in self._apply_to(body.get("remove_from")):
                if entry not in fw["applied_to"]:
                    raise ApiError("firewall_already_removed", "firewall is not applied to the resource")
                fw["applied_to"].remove(entry)
            act = self.action("remove_firewall", [(fw["id"], "firewall")])
        else:
            raise ApiError("not_found", f"unknown firewall action {command}")
        return {"actions": [public(act)]}

    def delete_firewall(self, fid: Any) -> None:
        fw = self.get("firewalls", fid)
        if fw["applied_to"]:
            raise ApiError("resource_in_use", "firewall is still applied to resources")
        del self.firewalls[fw["id"]]

    # ---- servers -----------------------------------------------------------------------------
    def create_server(self, body: Json) -> Json:
        name = self.unique_name("servers", body.get("name"))
        if not HOSTNAME.fullmatch(name):
            raise ApiError("invalid_input", "server name must be a valid hostname")
        if body.get("server_type") not in SERVER_TYPES:
            raise ApiError("invalid_input", f"server type {body.get('server_type')!r} not found")
        if body.get("image") not in IMAGES:
            raise ApiError("invalid_input", f"image {body.get('image')!r} not found")
        location = body.get("location") or "fsn1"
        if location not in LOCATIONS:
            raise ApiError("invalid_input", f"location {location!r} not found")
        labels = check_labels(body.get("labels"))
        if len(self.servers) >= self.faults.server_limit:
            raise ApiError("resource_limit_exceeded", "server limit exceeded")
        keys = []
        for ref in body.get("ssh_keys") or []:
            match = [k for k in self.ssh_keys.values() if ref in (k["id"], k["name"], str(k["id"]))]
            if not match:
                raise ApiError("invalid_input", f"SSH key {ref!r} not found")
            keys.append(match[0]["id"])
        pg = body.get("placement_group")
        if pg is not None:
            group = self.get("placement_groups", pg)
            members = [s for s in self.servers.values() if s["_placement_group"] == group["id"]]
            if len(members) >= SPREAD_LIMIT:
                raise ApiError("placement_error", f"placement group {group['name']} already has {SPREAD_LIMIT} servers")
            pg = group["id"]
        for nid in body.get("networks") or []:
            self.get("networks", nid)
        firewalls = [self.get("firewalls", (f or {}).get("firewall"))["id"] for f in body.get("firewalls") or []]
        sid = self.next_id()
        zone, country, city = LOCATIONS[location]
        cores, memory, disk, arch = SERVER_TYPES[body["server_type"]]
        start = body.get("start_after_create", True)
        server: Json = {
            "id": sid,
            "name": name,
            "status": "initializing",
            "created": now_iso(),
            "public_net": {
                "ipv4": {
                    "id": sid + 100000,
                    "ip": self.hooks.allocate_ipv4(sid)
                    if self.hooks
                    else f"198.51.{100 + sid // 250 % 100}.{sid % 250 + 1}",
                    "blocked": False,
                    "dns_ptr": f"static.{sid}.example",
                },
                "ipv6": {"id": sid + 200000, "ip": f"2001:db8:{sid:x}::/64", "blocked": False, "dns_ptr": []},
                "floating_ips": [],
                "firewalls": [],
            },
            "private_net": [],
            "server_type": {
                "id": list(SERVER_TYPES).index(body["server_type"]) + 1,
                "name": body["server_type"],
                "description": body["server_type"].upper(),
                "cores": cores,
                "memory": memory,
                "disk": disk,
                "deprecated": False,
                "prices": [],
                "storage_type": "local",
                "cpu_type": "shared",
                "architecture": arch,
            },
            "datacenter": {
                "id": list(LOCATIONS).index(location) + 1,
                "name": f"{location}-dc1",
                "description": f"{city} DC1",
            },
            "location": {
                "id": list(LOCATIONS).index(location) + 1,
                "name": location,
                "description": city,
                "country": country,
                "city": city,
                "latitude": 0.0,
                "longitude": 0.0,
                "network_zone": zone,
            },
            "image": {
                "id": IMAGES.index(body["image"]) + 1,
                "type": "system",
                "status": "available",
                "name": body["image"],
                "description": body["image"],
                "os_flavor": body["image"].split("-")[0],
                "os_version": body["image"].split("-")[1],
                "rapid_deploy": True,
                "architecture": arch,
            },
            "iso": None,
            "rescue_enabled": False,
            "locked": False,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21990232555520,
            "protection": {"delete": False, "rebuild": False},
            "labels": labels,
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": disk,
            "_placement_group": pg,
            "_ssh_keys": keys,
        }
        self.servers[sid] = server
        for fid in firewalls:
            self.firewalls[fid]["applied_to"].append({"type": "server", "server": {"id": sid}})
        for nid in body.get("networks") or []:
            self._attach(server, self.networks[int(nid)], None)

        user_data = body.get("user_data")

        def created() -> None:
            server["status"] = "running" if start else "off"
            if self.hooks:
                self.hooks.boot(server, [self.ssh_keys[k]["public_key"] for k in keys], user_data)

        def failed() -> None:  # Hetzner cleans up a server whose creation failed
            self.servers.pop(sid, None)

        act = self.action("create_server", [(sid, "server")], created, failed)
        next_actions = [self.action("start_server", [(sid, "server")])] if start else []
        return {
            "server": self.render("servers", server),
            "action": public(act),
            "next_actions": [public(a) for a in next_actions],
            "root_password": None if keys else "fake-root-password",
        }

    def update(self, kind: str, rid: Any, body: Json) -> Json:
        res = self.get(kind, rid)
        if "name" in body:
            res["name"] = self.unique_name(kind, body["name"], exclude=res["id"])
        if "labels" in body:
            res["labels"] = check_labels(body["labels"])
        return {kind[:-1]: self.render(kind, res)}

    def delete_server(self, sid: Any) -> Json:
        server = self.get("servers", sid)
        if server["protection"]["delete"]:
            raise ApiError("protected", "server is delete protected; disable the protection first")
        server["status"] = "deleting"

        def gone() -> None:
            self.servers.pop(server["id"], None)
            for volume in self.volumes.values():  # Hetzner detaches volumes, never deletes them
                if volume["server"] == server["id"]:
                    volume["server"] = None
            if self.hooks:
                self.hooks.delete(server)
            for fw in self.firewalls.values():
                fw["applied_to"] = [
                    t for t in fw["applied_to"] if not (t["type"] == "server" and t["server"]["id"] == server["id"])
                ]

        return {"action": public(self.action("delete_server", [(server["id"], "server")], gone))}

    def _attach(self, server: Json, network: Json, ip: str | None) -> None:
        if any(p["network"] == network["id"] for p in server["private_net"]):
            raise ApiError("server_already_attached", "server is already attached to the network")
        zone = server["location"]["network_zone"]
        subnets = [s for s in network["subnets"] if s["network_zone"] == zone]
        if not subnets:
            raise ApiError("invalid_input", f"network {network['name']} has no subnet in zone {zone}")
        used = {p["ip"] for s in self.servers.values() for p in s["private_net"] if p["network"] == network["id"]}
        if ip is None:
            candidates = (str(h) for s in subnets for h in list(ipaddress.ip_network(s["ip_range"]).hosts())[1:])
            ip = next(c for c in candidates if c not in used)
        else:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                raise ApiError("invalid_input", f"invalid ip {ip!r}") from None
            subnet = next((s for s in subnets if addr in ipaddress.ip_network(s["ip_range"])), None)
            if (
                subnet is None
                or ip == subnet["gateway"]
                or addr == ipaddress.ip_network(subnet["ip_range"]).broadcast_address
            ):
                raise ApiError("invalid_input", f"ip {ip} is not a usable address of a subnet in zone {zone}")
            if ip in used:
                raise ApiError("ip_not_available", f"ip {ip} is already in use")
        server["private_net"].append(
            {
                "network": network["id"],
                "ip": ip,
                "alias_ips": [],
                "mac_address": f"86:00:00:{server['id'] % 256:02x}:00:01",
            }
        )

    def server_action(self, sid: Any, command: str, body: Json) -> Json:
        server = self.get("servers", sid)
        if self.locked(server["id"], "server"):
            raise ApiError("locked", "server is locked by a running action")
        if command == "attach_to_network":
            network = self.get("networks", body.get("network"))
            self._attach(server, network, body.get("ip"))

            def undo() -> None:
                server["private_net"] = [p for p in server["private_net"] if p["network"] != network["id"]]

            act = self.action(
                "attach_to_network", [(server["id"], "server"), (network["id"], "network")], on_error=undo
            )
        elif command == "detach_from_network":
            network = self.get("networks", body.get("network"))
            if not any(p["network"] == network["id"] for p in server["private_net"]):
                raise ApiError("invalid_input", "server is not attached to the network")
            server["private_net"] = [p for p in server["private_net"] if p["network"] != network["id"]]
            act = self.action("detach_from_network", [(server["id"], "server"), (network["id"], "network")])
        elif command == "change_protection":
            delete, rebuild = body.get("delete"), body.get("rebuild")
            for value in (delete, rebuild):
                if value is not None and not isinstance(value, bool):
                    raise ApiError("invalid_input", "delete and rebuild must be booleans")
            new = {
                "delete": server["protection"]["delete"] if delete is None else delete,
                "rebuild": server["protection"]["rebuild"] if rebuild is None else rebuild,
            }
            if new["delete"] != new["rebuild"]:  # the API's rule: both change together
                raise ApiError("invalid_input", "delete and rebuild protection must have the same value")
            server["protection"] = new
            act = self.action("change_protection", [(server["id"], "server")])
        elif command in ("poweron", "poweroff", "shutdown", "reboot", "reset"):
            status = "running" if command in ("poweron", "reboot", "reset") else "off"

            def power() -> None:
                server["status"] = status

            act = self.action(
                {"poweron": "start_server", "poweroff": "stop_server"}.get(command, command),
                [(server["id"], "server")],
                power,
            )
        else:
            raise ApiError("not_found", f"unknown server action {command}")
        return {"action": public(act)}

    # ---- volumes -----------------------------------------------------------------------------
    def _volume_size(self, size: Any) -> int:
        if isinstance(size, bool) or not isinstance(size, int) or not VOLUME_SIZE_MIN <= size <= VOLUME_SIZE_MAX:
            raise ApiError(
                "invalid_input",
                f"invalid input in field 'size': size must be between {VOLUME_SIZE_MIN} and {VOLUME_SIZE_MAX} GB",
                {"fields": [{"name": "size", "messages": ["size out of range"]}]},
            )
        return size

    def _attach_volume(self, volume: Json, server: Json) -> None:
        if volume["server"] is not None:
            raise ApiError("volume_already_attached", "volume is already attached to a server, detach first")
        if server["location"]["name"] != volume["location"]["name"]:
            raise ApiError("invalid_input", "server and volume must be in the same location")
        volume["server"] = server["id"]

    def create_volume(self, body: Json) -> Json:
        name = self.unique_name("volumes", body.get("name"))
        if not HOSTNAME.fullmatch(name) or len(name) > 64:
            raise ApiError("invalid_input", "invalid input in field 'name'")
        size = self._volume_size(body.get("size"))
        fmt = body.get("format")
        if fmt is not None and fmt not in VOLUME_FORMATS:
            raise ApiError("invalid_input", f"invalid input in field 'format': one of {', '.join(VOLUME_FORMATS)}")
        automount = body.get("automount", False)
        if not isinstance(automount, bool):
            raise ApiError("invalid_input", "invalid input in field 'automount'")
        location, server = body.get("location"), body.get("server")
        if (location is None) == (server is None):
            raise ApiError("invalid_input", "exactly one of location and server must be given")
        target = self.get("servers", server) if server is not None else None
        loc = target["location"]["name"] if target is not None else location
        if loc not in LOCATIONS:
            raise ApiError("invalid_input", f"location {loc!r} not found")
        labels = check_labels(body.get("labels"))
        vid = self.next_id()
        zone, country, city = LOCATIONS[loc]
        volume: Json = {
            "id": vid,
            "created": now_iso(),
            "name": name,
            "server": None,
            "location": {
                "id": list(LOCATIONS).index(loc) + 1,
                "name": loc,
                "description": city,
                "country": country,
                "city": city,
                "latitude": 0.0,
                "longitude": 0.0,
                "network_zone": zone,
            },
            "size": size,
            "linux_device": f"/dev/disk/by-id/scsi-0HC_Volume_{vid}",
            "protection": {"delete": False},
            "labels": labels,
            "status": "creating",
            "format": fmt,
        }
        self.volumes[vid] = volume

        def available() -> None:
            volume["status"] = "available"

        def failed() -> None:
            self.volumes.pop(vid, None)

        act = self.action("create_volume", [(vid, "volume")], available, failed)
        next_actions = []
        if target is not None:
            self._attach_volume(volume, target)
            next_actions.append(self.action("attach_volume", [(vid, "volume"), (target["id"], "server")]))
        return {
            "volume": self.render("volumes", volume),
            "action": public(act),
            "next_actions": [public(a) for a in next_actions],
        }

    def volume_action(self, vid: Any, command: str, body: Json) -> Json:
        volume = self.get("volumes", vid)
        if self.locked(volume["id"], "volume"):
            raise ApiError("locked", "volume is locked by a running action")
        if command == "attach":
            server = self.get("servers", body.get("server"))
            self._attach_volume(volume, server)

            def undo() -> None:
                volume["server"] = None

            act = self.action("attach_volume", [(volume["id"], "volume"), (server["id"], "server")], on_error=undo)
        elif command == "detach":
            if volume["server"] is None:
                raise ApiError("invalid_input", "volume is not attached to a server")
            sid = volume["server"]
            volume["server"] = None
            act = self.action("detach_volume", [(volume["id"], "volume"), (sid, "server")])
        elif command == "resize":
            size = self._volume_size(body.get("size"))
            if size <= volume["size"]:
                raise ApiError(
                    "invalid_input",
                    f"invalid input in field 'size': a volume can only grow (it has {volume['size']} GB)",
                    {"fields": [{"name": "size", "messages": ["size must be larger than the current size"]}]},
                )

            def grown() -> None:
                volume["size"] = size

            act = self.action("resize_volume", [(volume["id"], "volume")], grown)
        elif command == "change_protection":
            delete = body.get("delete")
            if delete is not None and not isinstance(delete, bool):
                raise ApiError("invalid_input", "delete must be a boolean")
            if delete is not None:
                volume["protection"] = {"delete": delete}
            act = self.action("change_protection", [(volume["id"], "volume")])
        else:
            raise ApiError("not_found", f"unknown volume action {command}")
        return {"action": public(act)}

    def delete_volume(self, vid: Any) -> None:
        volume = self.get("volumes", vid)
        if volume["protection"]["delete"]:
            raise ApiError("protected", "volume is delete protected; disable the protection first")
        if volume["server"] is not None:
            raise ApiError("resource_in_use", "volume is attached to a server, detach it first")
        del self.volumes[volume["id"]]
