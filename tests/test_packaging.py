"""The flake's package and devShell carry exactly the Python dependencies pyproject.toml declares.

package.nix once listed six of pyproject's eleven runtime dependencies, so every
`nix run .#deploy` died with ModuleNotFoundError (cli.py imports pyrage at start-up).
There is no nixpkgs here, so the flake is evaluated by the real Nix evaluator against a
stand-in nixpkgs: every nixpkgs value is a stub that knows its own attribute name (so a
Python package reads as its nixpkgs attribute, e.g. `click`), buildPythonPackage returns
its arguments, and fetchurl returns {url, hash}. Our own packages (orchestrator/nix/) are
therefore really called, and read by their pname and dependencies.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, nix_eval, nix_string

SYSTEMS = ["x86_64-linux", "aarch64-linux"]
WHEEL_ARCH = {"x86_64-linux": "x86_64", "aarch64-linux": "aarch64"}

# Tools the code and its tests run (the devShell's packages beside Python); see flake.nix.
SHELL_TOOLS = {"ruff", "nix", "git", "etcd", "haproxy", "go", "openssh", "util-linux", "age", "nixos-anywhere"}
# Dev dependencies that come as tools rather than inside the devShell's Python.
DEV_AS_TOOLS = {"ruff"}

NIX_SOURCES = [
    REPO / "flake.nix",
    REPO / "orchestrator" / "package.nix",
    *sorted((REPO / "orchestrator/nix").glob("*.nix")),
]

# The stand-in nixpkgs. A stub has every identifier of the evaluated files as an attribute
# (a stub again), can be called with anything (returning itself), and has an outPath.
MOCK = r"""
{ tokens, system, flake }:
let
  stub = name:
    builtins.listToAttrs (map (t: { name = t; value = stub t; }) tokens)
    // { __stub = name; __functor = self: _: self; outPath = "/stub/" + name; };
  genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
  lib = stub "lib" // builtins // {
    inherit genAttrs;
    getLib = x: x;
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
  };
  pkgsFor = system:
    let
      stdenv = stub "stdenv" // {
        hostPlatform = stub "hostPlatform" // { inherit system; isLinux = true; isDarwin = false; };
      };
      built = attrs: attrs // { __built = true; };
      scope = stub "python3Packages" // {
        inherit lib stdenv;
        callPackage = fn: overrides:
          let f = if builtins.isFunction fn then fn else import fn;
          in f (builtins.mapAttrs (n: _: scope.${n}) (builtins.functionArgs f) // overrides);
        buildPythonPackage = built;
        buildPythonApplication = built;
        fetchurl = attrs: attrs;
      };
    in
    stub "pkgs" // {
      inherit lib stdenv;
      python3Packages = scope;
      python3 = stub "python3" // { pkgs = scope; withPackages = f: { __withPackages = f scope; }; };
      mkShell = attrs: attrs;
    };
  nixpkgs = { inherit lib; legacyPackages = genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor; };
  outputs = (import flake).outputs { self = outputs; inherit nixpkgs; disko = stub "disko"; };

  name = p: if p ? __stub then p.__stub else p.pname;
  # a stub (a nixpkgs package) is only its name; ours are read by their arguments
  describe = p:
    if p ? __stub then
      { name = p.__stub; version = null; src = null; dependencies = [ ]; ours = [ ]; }
    else
      {
        name = p.pname;
        version = p.version;
        src = if p.src ? __stub then null else p.src.url;
        dependencies = map name (p.dependencies or [ ]);
        ours = map describe (builtins.filter (d: d ? __built) (p.dependencies or [ ]));
      };
  shell = outputs.devShells.${system}.default;
  python = builtins.filter (p: p ? __withPackages) shell.packages;
in
{
  package = describe outputs.packages.${system}.default;
  shellPython = map describe (builtins.concatMap (p: p.__withPackages) python);
  shellPythons = builtins.length python;
  shellTools = map name (builtins.filter (p: !(p ? __withPackages)) shell.packages);
}
"""


def normalize(name: str) -> str:
    """PEP 503. nixpkgs names a Python package's attribute by its normalized PyPI name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return normalize(match.group(1))


def pyproject() -> dict[str, Any]:
    with (REPO / "orchestrator" / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


RUNTIME = {requirement_name(r) for r in pyproject()["project"]["dependencies"]}
DEV = {requirement_name(r) for r in pyproject()["project"]["optional-dependencies"]["dev"]}


def tokens() -> list[str]:
    found: set[str] = set()
    for path in NIX_SOURCES:
        found |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_'-]*", path.read_text()))
    return sorted(found)


def evaluate(system: str, flake: Path = REPO / "flake.nix") -> dict[str, Any]:
    expr = f"({MOCK}) {{ tokens = builtins.fromJSON {nix_string(json.dumps(tokens()))}; "
    expr += f"system = {nix_string(system)}; flake = {nix_string(str(flake))}; }}"
    proc = nix_eval(expr)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module", params=SYSTEMS)
def flake(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, evaluate(request.param)


def names(packages: list[dict[str, Any]]) -> set[str]:
    return {normalize(p["name"]) for p in packages}


def test_pyproject_is_read() -> None:
    assert {"click", "hcloud", "pyrage", "cslab-etcd3"} <= RUNTIME
    assert {"pytest", "ruff", "mypy"} <= DEV


def test_the_package_depends_on_exactly_pyprojects_dependencies(flake: tuple[str, dict[str, Any]]) -> None:
    _, out = flake
    deps = out["package"]["dependencies"]
    assert len(deps) == len(set(deps)), f"listed twice in package.nix: {deps}"
    got = {normalize(d) for d in deps}
    assert got - RUNTIME == set(), "package.nix has dependencies pyproject.toml does not"
    assert RUNTIME - got == set(), "pyproject.toml has dependencies package.nix lacks"
    assert out["package"]["version"] == pyproject()["project"]["version"]


def test_our_packages_depend_on_what_their_metadata_requires(flake: tuple[str, dict[str, Any]]) -> None:
    """pyrage and cslab-etcd3 (orchestrator/nix/) against the metadata of the same release."""
    _, out = flake
    ours = {normalize(p["name"]): p for p in out["package"]["ours"]}
    assert set(ours) == {"pyrage", "cslab-etcd3"}
    for name, package in ours.items():
        installed = importlib.metadata.version(name)
        if installed != package["version"]:  # pragma: no cover - the venv took a newer release
            pytest.skip(f"{name}: the venv has {installed}, orchestrator/nix packages {package['version']}")
        requires = importlib.metadata.requires(name) or []
        wanted = {requirement_name(r) for r in requires if "extra ==" not in r}
        assert {normalize(d) for d in package["dependencies"]} == wanted, name


def test_our_packages_fetch_their_own_release_files(flake: tuple[str, dict[str, Any]]) -> None:
    system, out = flake
    ours = {normalize(p["name"]): p for p in out["package"]["ours"]}
    pyrage, etcd3 = ours["pyrage"], ours["cslab-etcd3"]
    wheel = pyrage["src"].rsplit("/", 1)[1]
    assert wheel.startswith(f"pyrage-{pyrage['version']}-cp310-abi3-manylinux_2_17_{WHEEL_ARCH[system]}.")
    assert wheel.endswith(".whl")
    assert etcd3["src"].endswith(f"/cslab_etcd3-{etcd3['version']}.tar.gz")


def test_the_devshell_has_the_runtime_and_dev_dependencies_and_nothing_else(
    flake: tuple[str, dict[str, Any]],
) -> None:
    _, out = flake
    assert out["shellPythons"] == 1
    python = names(out["shellPython"])
    assert python - (RUNTIME | DEV) == set(), "the devShell's Python has packages the code does not use"
    assert (RUNTIME | DEV) - DEV_AS_TOOLS - python == set(), "the devShell's Python lacks declared dependencies"
    assert set(out["shellTools"]) >= DEV_AS_TOOLS


def test_the_devshell_uses_the_same_packages_as_the_package(flake: tuple[str, dict[str, Any]]) -> None:
    _, out = flake
    in_shell = {normalize(p["name"]): p for p in out["shellPython"] if p["src"] is not None}
    in_package = {normalize(p["name"]): p for p in out["package"]["ours"]}
    assert in_shell == in_package


def test_the_devshell_tools_are_those_the_tests_run(flake: tuple[str, dict[str, Any]]) -> None:
    _, out = flake
    assert sorted(out["shellTools"]) == sorted(SHELL_TOOLS)


def test_the_stand_in_nixpkgs_sees_a_missing_dependency(tmp_path: Path) -> None:
    """The check can fail: a package.nix without pyrage reads as lacking it."""
    (tmp_path / "orchestrator").mkdir()
    for name in ["flake.nix", "orchestrator/package.nix"]:
        (tmp_path / name).write_text((REPO / name).read_text())
    (tmp_path / "orchestrator" / "nix").symlink_to(REPO / "orchestrator" / "nix")
    package = tmp_path / "orchestrator" / "package.nix"
    package.write_text(package.read_text().replace("    pyrage\n    requests\n", "    requests\n", 1))
    deps = evaluate("x86_64-linux", tmp_path / "flake.nix")["package"]["dependencies"]
    assert "pyrage" not in deps
    assert "requests" in deps
