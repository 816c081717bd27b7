"""The template's placeholders, refused before a real cloud is touched.

templates/cluster/cluster.nix (and lib/example.nix) ship an example SSH key and a documentation
address range (RFC 5737, RFC 3849) as the admin CIDR. Against the real Hetzner API they would
create servers nobody can log in to and firewalls that let only a documentation range in; against
a local stand-in (the fake API, the sandbox: an endpoint on loopback) they are harmless examples.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from nix_infra.manifest import Manifest

# the base64 of the example key in templates/cluster/cluster.nix and lib/example.nix
EXAMPLE_SSH_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIFh3lE0v6xTeU8KJ1Yl9bWQ8m4xg1Qk5yUn7s0Zq3pQ2"

DOCUMENTATION_RANGES = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def _documentation(cidr: str) -> bool:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    return any(net.version == doc.version and net.subnet_of(doc) for doc in DOCUMENTATION_RANGES)  # type: ignore[arg-type]


def placeholder_problems(manifest: Manifest) -> list[str]:
    """One line per placeholder the cluster spec still has, naming the field and what to put there."""
    problems: list[str] = []
    for i, key in enumerate(manifest.ssh_keys):
        if EXAMPLE_SSH_KEY in key.split():
            problems.append(
                f"provider.sshKeys[{i}]: the template's example key; replace this placeholder with your own "
                "public key (e.g. the line of ~/.ssh/id_ed25519.pub)"
            )
    for i, cidr in enumerate(manifest.admin_cidrs):
        if _documentation(cidr):
            problems.append(
                f"provider.adminCidrs[{i}]: {cidr} is a documentation range (192.0.2.0/24, 198.51.100.0/24, "
                "203.0.113.0/24, 2001:db8::/32); replace this placeholder with the addresses you administer "
                "the cluster from (e.g. your office's public IP as 'A.B.C.D/32')"
            )
    return problems


def is_local_endpoint(url: str) -> bool:
    """An API endpoint on this machine (the fake API, the sandbox), where placeholders are harmless."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
