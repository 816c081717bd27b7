"""The tools bin/setup builds into the repository's .tools/bin (confd, flanneld).

``tool(name)`` is the one way tests find them: a missing tool fails the test
with a message naming bin/setup, never a silent skip (CI runs bin/setup first).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"

# What bin/setup installs into .tools/bin, and why (docs/dependencies.md):
# confd renders the mesh's haproxy configuration from etcd on every node;
# flanneld is the overlay network of the container hosts.
KNOWN = frozenset({"confd", "flanneld"})


def tool(name: str) -> Path:
    """The absolute path of ``.tools/bin/<name>``, an executable file.

    ``name`` is one of ``KNOWN`` (``"confd"``, ``"flanneld"``); any other name
    is a programming error (ValueError). Fails the calling test (pytest.fail)
    when the file is missing or not executable, naming ``./bin/setup``.
    """
    if name not in KNOWN:
        raise ValueError(f"unknown tool {name!r}; bin/setup installs {sorted(KNOWN)}")
    path = TOOLS_BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is missing or not executable: run ./bin/setup (it builds {name} from its Go module)")
    return path
