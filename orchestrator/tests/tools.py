"""Where the tests find the daemons bin/setup builds (confd, flanneld)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tool(name: str) -> Path:
    """REPO/.tools/bin/<name>; raises RuntimeError naming bin/setup when it is missing (never a skip)."""
    path = REPO / ".tools" / "bin" / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run bin/setup, which builds {name}")
    return path
