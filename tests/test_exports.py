"""What the flake exports, what the module evaluation check evaluates alone,
the examples docs/modules.md shows, and the cluster template's own docs and
CI agree (issue 18). Text checks: they run without a nixpkgs lib."""

from __future__ import annotations

import re

from conftest import REPO

FLAKE = (REPO / "flake.nix").read_text()
STANDALONE = (REPO / "checks" / "module-eval" / "standalone.nix").read_text()
MODULES_DOC = (REPO / "docs" / "modules.md").read_text()


def attr_block(text: str, name: str) -> set[str]:
    open_at = text.index("{", text.index(f"{name} = {{"))
    depth, end = 0, open_at
    for end in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            break
    body = text[open_at + 1 : end]
    # the attribute names at depth 0 of the block
    names, depth = set(), 0
    for line in body.splitlines():
        if depth == 0 and (m := re.match(r"\s*([A-Za-z][\w-]*)\s*=", line)):
            names.add(m.group(1))
        depth += line.count("{") - line.count("}")
    return names


def test_the_check_evaluates_every_exported_module_alone() -> None:
    for kind in ("nixosModules", "appModules"):
        exported = attr_block(FLAKE, kind)
        assert exported, kind
        assert attr_block(STANDALONE, kind) == exported
        for name in exported:
            assert (REPO / "checks" / "module-eval" / "examples" / f"{name}.nix").is_file(), name
            assert f"## `{kind}.{name}`" in MODULES_DOC, f"docs/modules.md lacks {kind}.{name}"


def test_the_template_documents_what_mkClusterFlake_takes() -> None:
    readme = (REPO / "templates" / "cluster" / "app_modules" / "README.md").read_text()
    assert "modules.<node>" not in readme
    assert "nodeModules.<node>" in readme and "modules = [" in readme
    flake = (REPO / "templates" / "cluster" / "flake.nix").read_text()
    takes = set(re.findall(r"^\s+(\w+) \?", (REPO / "lib" / "cluster-flake.nix").read_text(), re.M))
    given = set(re.findall(r"^      (\w+) =", flake, re.M))
    assert given <= takes | {"cluster"}, given - takes
    assert "./app_modules/api.nix" in flake


def test_the_template_ships_a_ci_workflow_running_flake_check() -> None:
    workflow = (REPO / "templates" / "cluster" / ".github" / "workflows" / "ci.yml").read_text()
    assert "nix flake check" in workflow
