"""The deploy cache against hostile and unusual input (found by a review): each failed before its fix."""

from __future__ import annotations

from pathlib import Path

from nix_infra.deploycache import DeployCache, tools_digest


def test_a_deeply_nested_deployed_json_is_a_miss_not_a_traceback(tmp_path: Path) -> None:
    """A damaged or hostile deployed.json is a miss (the module doc); json.loads raises
    RecursionError on deep nesting, which _read does not catch: deploy ends in a traceback."""
    (tmp_path / "deployed.json").write_text("[" * 200_000 + "]" * 200_000)
    assert DeployCache(tmp_path).lookup("w1", "0" * 64) is None


def test_every_nix_conf_nix_reads_is_in_the_key(tmp_path: Path) -> None:
    """The key covers "the nix.conf files Nix reads". Nix 2.8 also reads
    $XDG_CONFIG_DIRS/nix/nix.conf (default /etc/xdg) and the files a nix.conf `!include`s
    (checked with `nix show-config`); a change there leaves the key as it was."""
    home = tmp_path / "home"
    (home / ".config" / "nix").mkdir(parents=True)
    xdg = tmp_path / "xdg"
    (xdg / "nix").mkdir(parents=True)
    included = tmp_path / "included.conf"
    (home / ".config" / "nix" / "nix.conf").write_text(f"!include {included}\n")
    environ = {"HOME": str(home), "XDG_CONFIG_DIRS": str(xdg), "NIX_CONF_DIR": str(tmp_path / "etc")}

    before = tools_digest(environ)
    (xdg / "nix" / "nix.conf").write_text("extra-sandbox-paths = /opt\n")
    after_xdg = tools_digest(environ)
    included.write_text("extra-sandbox-paths = /srv\n")
    after_include = tools_digest(environ)
    assert before != after_xdg, "a change in $XDG_CONFIG_DIRS/nix/nix.conf leaves the key as it was"
    assert after_xdg != after_include, "a change in an !include'd nix.conf leaves the key as it was"
