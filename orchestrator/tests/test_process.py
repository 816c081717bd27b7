"""process.run(): with `stream`, a long step's stderr is logged line by line as it comes
(what `-v` shows of nix build, nix copy and nixos-anywhere), and the result is unchanged."""

from __future__ import annotations

import logging
import time

import pytest

from nix_infra.errors import NixInfraError
from nix_infra.process import run

SCRIPT = "echo first >&2; sleep 0.3; echo second >&2; printf out; cat; exit 3"


def test_stream_logs_each_stderr_line_as_it_comes(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[float, str]] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((time.monotonic(), record.getMessage()))

    spy = Spy(level=logging.INFO)
    logger = logging.getLogger("nix_infra.process")
    logger.addHandler(spy)
    logger.setLevel(logging.INFO)
    try:
        start = time.monotonic()
        result = run(["sh", "-c", SCRIPT], check=False, input_text="in", stream="step")
        end = time.monotonic()
    finally:
        logger.removeHandler(spy)
    lines = [m for _, m in seen if m.startswith("step: ")]
    assert lines == ["step: first", "step: second"]
    # the first line was logged before the command ended (live, not afterwards)
    first = next(t for t, m in seen if m == "step: first")
    assert first - start < end - start
    assert (result.returncode, result.stdout, result.stderr) == (3, "outin", "first\nsecond\n")


def test_without_stream_nothing_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="nix_infra.process"):
        result = run(["sh", "-c", SCRIPT], check=False, input_text="in")
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    assert (result.returncode, result.stdout, result.stderr) == (3, "outin", "first\nsecond\n")


def test_a_streamed_failure_carries_its_tail_and_a_timeout_is_reported() -> None:
    with pytest.raises(NixInfraError, match=r"step failed \(exit 3\):\nfirst\nsecond"):
        run(["sh", "-c", SCRIPT], input_text="", stream="s", what="step")
    with pytest.raises(NixInfraError, match=r"slow: timed out after 0.5 s"):
        run(["sleep", "5"], stream="s", what="slow", timeout=0.5)
