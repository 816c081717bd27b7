"""The one subprocess chokepoint: every external command runs through `run()`.

Builders elsewhere return argv lists; `run()` executes them locally (or, from
later capabilities on, over SSH), logs the command, never the input, and checks
the exit code (as nixos-rebuild-ng's process.py).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
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
    stdout_bytes: bytes = b""  # the raw output, for commands whose output may be binary (a secret)


def command_failed(label: str, returncode: int, stderr: str) -> NixInfraError:
    """The error of a command that exited `returncode`: its label and the last 20 lines of its stderr."""
    tail = "\n".join(stderr.strip().splitlines()[-20:])
    return NixInfraError(
        f"{label} failed (exit {returncode}):\n{tail}" if tail else f"{label} failed (exit {returncode})"
    )


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input_text: str | None = None,
    input_bytes: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    what: str | None = None,
    stream: str | None = None,
) -> Result:
    """Run `argv`, capture its output and, with `check`, fail on a non-zero exit.

    `input_text` or `input_bytes` goes to stdin (so secrets never appear in argv
    or in logs; stdin is never logged); `what` names the step in the error
    message ("evaluating the manifest"). The raw output is in `stdout_bytes`.
    With `stream` (a label), each line the command writes to stderr is also
    logged at INFO as it comes ("<label>: <line>"): `-v` shows the progress of a
    long step (nix build, nix copy, nixos-anywhere). Only for commands whose
    stderr carries no secret.
    """
    shown = shlex.join(argv)
    log.debug("$ %s", shown)
    stdin = input_bytes if input_bytes is not None else None if input_text is None else input_text.encode()
    try:
        if stream is None:
            proc = subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                env=None if env is None else dict(env),
                cwd=cwd,
                timeout=timeout,
                check=False,
            )
            returncode, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            returncode, out, err = _run_streaming(argv, stdin, env, cwd, timeout, stream)
    except FileNotFoundError as exc:
        raise NixInfraError(f"{what or shown}: command not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise NixInfraError(f"{what or shown}: timed out after {timeout} s") from exc
    stdout = out.decode(errors="replace")
    stderr = err.decode(errors="replace")
    result = Result(tuple(argv), returncode, stdout, stderr, out)
    if check and returncode != 0:
        raise command_failed(what or shown, returncode, stderr)
    return result


def _run_streaming(
    argv: Sequence[str],
    stdin: bytes | None,
    env: Mapping[str, str] | None,
    cwd: str | None,
    timeout: float | None,
    label: str,
) -> tuple[int, bytes, bytes]:
    """run()'s body with stderr logged line by line as it comes; returns (code, stdout, stderr)."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    lines: list[bytes] = []
    # the reader thread owns stderr: communicate() below must not read it too
    errors, proc.stderr = proc.stderr, None
    assert errors is not None

    def pump() -> None:
        for raw in iter(errors.readline, b""):
            lines.append(raw)
            text = raw.decode(errors="replace").rstrip()
            if text:
                log.info("%s: %s", label, text)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(input=stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(timeout=5)
        raise
    reader.join()
    errors.close()
    return proc.returncode, out, b"".join(lines)


def run_attached(argv: Sequence[str], *, what: str | None = None) -> int:
    """Run `argv` with this terminal's stdin/stdout/stderr (an interactive or streaming command);
    logged like run(); returns the exit code, which the caller must check."""
    log.debug("$ %s", shlex.join(argv))
    try:
        return subprocess.call(list(argv))
    except FileNotFoundError as exc:
        raise NixInfraError(f"{what or shlex.join(argv)}: command not found: {argv[0]}") from exc
