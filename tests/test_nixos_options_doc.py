"""docs/nixos-options.md lists every upstream NixOS option the modules set, each with its nixpkgs file.

Modules cannot be evaluated here (no nixpkgs), so this keeps the cross-reference
honest from the text: every upstream option path written in a module appears in
the page, and every row names modules that still mention the option.
"""

from __future__ import annotations

import re

from conftest import REPO

DOC = (REPO / "docs" / "nixos-options.md").read_text()
MODULE_FILES = [
    *sorted([*REPO.glob("modules/*.nix"), *REPO.glob("app_modules/*.nix"), *REPO.glob("node_types/*.nix")]),
    REPO / "lib" / "cluster-flake.nix",
]
ROOTS = r"(?:services|networking|systemd|virtualisation|security|nix|boot|users|environment|system|disko)"
# an explicit dotted option path; `environment.X` inside a unit is a unit option, not environment.*
PATH = re.compile(rf"(?<![\w.$-]){ROOTS}\.[A-Za-z][\w-]*(?:\.[A-Za-z][\w-]*)*")
ROWS = re.compile(r"^\| `([^`]+)`[^|]*\| ([^|]+)\| ([^|]+)\|$", re.M)


def doc_rows() -> list[tuple[str, str, list[str]]]:
    rows = []
    for option, declared, used in ROWS.findall(DOC):
        rows.append((option, declared.strip(), [u.strip() for u in used.split(",")]))
    return rows


def expand(option: str) -> list[str]:
    """`a.b.{c,d}` -> [a.b.c, a.b.d]; `<name>` matches any one segment."""
    m = re.search(r"\{([^}]+)\}", option)
    if not m:
        return [option]
    return [option[: m.start()] + alt + option[m.end() :] for alt in m.group(1).split(",")]


def documented(path: str) -> bool:
    segments = path.split(".")
    for option, _, _ in doc_rows():
        for full in expand(option.split(" ")[0]):
            pattern = [s for s in full.split(".") if s]
            # the written path and the row agree on every segment both have (<name> matches any):
            # a shorter path is a prefix (`services.etcd = { ... }`), a longer one goes into the row's value
            if all(p.startswith("<") or p == seg for p, seg in zip(pattern, segments, strict=False)):
                return True
    return False


def test_every_upstream_option_written_in_a_module_is_documented() -> None:
    missing = set()
    for path in MODULE_FILES:
        text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        for found in PATH.findall(text):
            if found.startswith("environment.systemPackages") or re.match(r"environment\.[A-Z_]+$", found):
                continue  # packages, and a unit's `environment.VAR` (a unit option, documented with the unit)
            if not documented(found):
                missing.add(f"{path.relative_to(REPO)}: {found}")
    assert not missing, "add these to docs/nixos-options.md:\n" + "\n".join(sorted(missing))


def test_every_row_names_a_nixpkgs_file_and_modules_that_mention_it() -> None:
    rows = doc_rows()
    assert len(rows) >= 35
    for option, declared, used in rows:
        assert re.search(r"`(nixos/|lib/)[\w/.-]+\.nix`", declared), f"{option}: no declaring file"
        leaf = [s for s in re.split(r"[.{},]", expand(option.split(" ")[0])[0]) if s and not s.startswith("<")][-1]
        for module in used:
            text = (REPO / module).read_text()
            assert leaf in text, f"{option}: {module} does not mention {leaf}"


def test_the_doc_names_the_checker() -> None:
    assert "tests/test_nixos_options_doc.py" in DOC
