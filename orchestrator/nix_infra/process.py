"""The one subprocess chokepoint: every external command runs through `run()`.

Builders elsewhere return argv lists; `run()` executes them locally (or, from
later capabilities on, over SSH), logs the command, never the input, and checks
the exit code (as nixos-rebuild-ng's process.py).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nix_infra.errors import NixInfraError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    what: str | None = None,
) -> Result:
    """Run `argv`, capture its output and, with `check`, fail on a non-zero exit.

    `input_text` goes to stdin (so secrets never appear in argv or in logs);
    `what` names the step in the error message ("evaluating the manifest").
    """
    shown = shlex.join(argv)
    log.debug("$ %s", shown)
    try:
        proc = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            env=None if env is None else dict(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise NixInfraError(f"{what or shown}: command not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise NixInfraError(f"{what or shown}: timed out after {timeout} s") from exc
    result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise NixInfraError(
            f"{what or shown} failed (exit {proc.returncode}):\n{tail}"
            if tail
            else f"{what or shown} failed (exit {proc.returncode})"
        )
    return result
