"""Choosing nodes: `--on NODE,...`, `--on @type`, `--on @label=value`."""

from __future__ import annotations

from nix_infra.errors import NixInfraError
from nix_infra.manifest import Manifest, Node

NODE_TYPES = ("ctrl", "worker", "service", "ingress", "registry")


def select(manifest: Manifest, specs: tuple[str, ...] | list[str]) -> list[Node]:
    """Nodes matching any of the comma-separated selectors; every node when none is given."""
    if not specs:
        return list(manifest.nodes.values())
    chosen: dict[str, Node] = {}
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            if item.startswith("@"):
                sel = item[1:]
                if "=" in sel:
                    key, value = sel.split("=", 1)
                    found = [n for n in manifest.nodes.values() if n.labels.get(key) == value]
                elif sel in NODE_TYPES:
                    found = [n for n in manifest.nodes.values() if n.type == sel]
                else:
                    raise NixInfraError(
                        f"--on {item}: not a node type ({', '.join(NODE_TYPES)}) or label selector (@key=value)"
                    )
                if not found:
                    raise NixInfraError(f"--on {item}: no node matches")
            elif item in manifest.nodes:
                found = [manifest.nodes[item]]
            else:
                raise NixInfraError(f"--on {item}: no such node; nodes are: {', '.join(manifest.nodes)}")
            chosen.update((n.name, n) for n in found)
    return [manifest.nodes[name] for name in manifest.nodes if name in chosen]
