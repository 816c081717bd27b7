"""Choosing nodes: `--on NODE,...`, `--on @type`, `--on @label=value`."""

from __future__ import annotations

from nix_infra.errors import NixInfraError
from nix_infra.manifest import NODE_TYPES, Manifest, Node

SELECTOR_RULE = "NODE[,NODE...], @type (e.g. @worker) or @label=value"


def select(manifest: Manifest, specs: tuple[str, ...] | list[str], option: str = "--on") -> list[Node]:
    """Nodes matching any of the comma-separated selectors; every node when none is given.

    A selector that names nothing (`--on ,`, `--on ''`) is an error, never "every node" nor "none":
    `option` is the name the messages use (`--on`, `--targets`, `NODE`)."""
    if not specs:
        return list(manifest.nodes.values())
    chosen: dict[str, Node] = {}
    for spec in specs:
        items = [s.strip() for s in spec.split(",")]
        if not any(items):
            raise NixInfraError(f"{option} {spec!r}: names no node; expected {SELECTOR_RULE}")
        for item in filter(None, items):
            if item.startswith("@"):
                sel = item[1:]
                if "=" in sel:
                    key, value = sel.split("=", 1)
                    found = [n for n in manifest.nodes.values() if n.labels.get(key) == value]
                elif sel in NODE_TYPES:
                    found = [n for n in manifest.nodes.values() if n.type == sel]
                else:
                    raise NixInfraError(
                        f"{option} {item!r}: not a node type ({', '.join(NODE_TYPES)}) or label selector (@key=value)"
                    )
                if not found:
                    raise NixInfraError(f"{option} {item!r}: no node matches")
            elif item in manifest.nodes:
                found = [manifest.nodes[item]]
            else:
                raise NixInfraError(f"{option} {item!r}: no such node; nodes are: {', '.join(manifest.nodes)}")
            chosen.update((n.name, n) for n in found)
    return [manifest.nodes[name] for name in manifest.nodes if name in chosen]


def one_node(manifest: Manifest, name: str, option: str = "NODE") -> Node:
    """Exactly one node, by its name."""
    if name not in manifest.nodes:
        raise NixInfraError(f"{option} {name!r}: no such node; nodes are: {', '.join(manifest.nodes)}")
    return manifest.nodes[name]
