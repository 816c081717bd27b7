"""Commands that destroy data ask first (review findings): `etcd del --prefix` of what the whole
cluster runs on needs --force, and `backup restore` replaces a live database only after a yes."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_cli


@pytest.mark.parametrize("prefix", ["/", "/cluster/", "/cluster", "/cluster/nodes/", "/nix-infra/"])
def test_deleting_everything_under_a_broad_prefix_needs_force(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prefix: str
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "--yes", "etcd", "del", "--prefix", prefix)
    assert code == 1
    assert f"etcd del --prefix {prefix} deletes what the whole cluster runs on" in err and "--force" in err


def test_a_restore_without_a_terminal_or_yes_replaces_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    called: list[object] = []
    monkeypatch.setattr("nix_infra.backup.restore", lambda *a, **k: called.append(a))
    monkeypatch.setattr("nix_infra.cli_backup._target", lambda *a, **k: called.append(a))
    code, _, err = run_cli(capsys, "backup", "restore", "db001", "db")
    assert code == 1
    assert "Replace the data of db on db001 with snapshot latest?" in err and "pass --yes" in err
    assert called == []


def test_ctrl_c_while_the_cli_loads_exits_130_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # review finding: Ctrl-C in the first fraction of a second printed a 20-line traceback
    import importlib.abc
    import sys
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

    from nix_infra import entry

    class Interrupt(importlib.abc.MetaPathFinder):
        def find_spec(
            self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
        ) -> ModuleSpec | None:
            if name == "nix_infra.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "nix_infra.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupt(), *sys.meta_path])
    with pytest.raises(SystemExit) as exc:
        entry.main()
    assert exc.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_demo_directory_that_cannot_be_made_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "sandbox", "demo", "/proc/nix-infra-demo")
    assert code == 1 and "cannot create the demo's directory" in err and "Traceback" not in err
