"""Every path literal in every tracked .nix file names a file or directory of the repository.

A path literal that names nothing parses fine and fails only when a NixOS system or the
package is built: `${../scripts/x.sh}` in modules/ pointed one level too high and only a
real build would have told. `nix-instantiate --parse` prints the parsed expression with
every path literal made absolute (relative to the file's directory), also those inside
`${…}` and indented strings; this test reads them back from that output.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, bare_env

# the characters of a path literal (Nix's PATH_CHAR), and of an identifier, which a path cannot follow
_PATH_CHAR = re.compile(r"[A-Za-z0-9._\-+/]")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_'\-]")


def path_literals(ast: str) -> list[str]:
    """The path literals in the output of `nix-instantiate --parse`, in order.

    Strings are skipped, but the expressions interpolated into them (`"${…}"`, as dynamic
    attribute names print) are read. An interpolated path (`./a/${x}.nix`, printed
    `(/r/a/ + x + ".nix")`) yields its literal part, `/r/a/`. `//` is the update operator.
    """
    found: list[str] = []
    n = len(ast)

    def expr(i: int, *, in_antiquote: bool) -> int:
        depth = 0
        while i < n:
            c = ast[i]
            if c == '"':
                i = string(i + 1)
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0 and in_antiquote:
                    return i + 1
                depth -= 1
            elif c == "/" and (i == 0 or not _IDENT_CHAR.match(ast[i - 1])):
                j = i
                while j < n and _PATH_CHAR.match(ast[j]):
                    j += 1
                if ast[i:j] != "//":
                    found.append(ast[i:j])
                i = j
                continue
            i += 1
        return i

    def string(i: int) -> int:
        while i < n:
            c = ast[i]
            if c == "\\":
                i += 2
            elif c == '"':
                return i + 1
            elif ast.startswith("${", i):
                i = expr(i + 2, in_antiquote=True)
            else:
                i += 1
        return i

    expr(0, in_antiquote=False)
    return found


def parsed(path: Path) -> str:
    proc = subprocess.run(
        ["nix-instantiate", "--parse", "--", str(path)], env=bare_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def tracked_nix_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.nix"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return sorted(REPO / name for name in out.split("\0") if name)


NIX_FILES = tracked_nix_files()


def bad_paths(path: Path) -> list[str]:
    """The path literals of one file that name nothing, or something outside the repository."""
    bad = []
    for literal in path_literals(parsed(path)):
        target = Path(literal.rstrip("/") or "/")
        if not target.is_relative_to(REPO):
            bad.append(f"{literal} (outside the repository)")
        elif not target.exists():
            bad.append(f"{target.relative_to(REPO).as_posix()} (no such file or directory)")
    return bad


def test_the_scanner_reads_paths_where_nix_prints_them() -> None:
    ast = (
        '(let y = "q/r"; in { a = (/r/x + ("/" + y)); b = /r/s.sh; c = (/r/a/ + y + ".nix"); '
        '"${(d + "/conf.d/x.toml")}" = { text = (/r/t); }; e = (a // b); f = "/not/a/path\\" /still"; '
        "g = (__div n 2); h = /r/x/y.z-w_1; i = /r; })"
    )
    assert path_literals(ast) == ["/r/x", "/r/s.sh", "/r/a/", "/r/t", "/r/x/y.z-w_1", "/r"]


def test_nix_instantiate_prints_path_literals_made_absolute(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    file = tmp_path / "sub" / "f.nix"
    file.write_text(
        'let y = "q"; in { a = ../up.sh; b = ./x + "/${y}"; c = "${./in-string}"; d = \'\'${./ind}\'\'; }\n'
    )
    assert path_literals(parsed(file)) == [
        str(tmp_path / "up.sh"),
        str(tmp_path / "sub" / "x"),
        str(tmp_path / "sub" / "in-string"),
        str(tmp_path / "sub" / "ind"),
    ]


def test_there_are_tracked_nix_files() -> None:
    assert REPO / "flake.nix" in NIX_FILES
    assert REPO / "modules" / "apps.nix" in NIX_FILES


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_path_literal_exists(path: Path) -> None:
    assert bad_paths(path) == []
