"""Builders run as separate processes, for the tests that kill them: SIGKILL is what a crash looks like."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spawn_builder(module: str, args: list[str]) -> subprocess.Popen[bytes]:
    """``python -m <module> <args>`` from the repository, stderr kept for the assertion messages."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def kill_after(module: str, args: list[str], progress: Callable[[], int], reached: int, poll: float = 0.01) -> int:
    """Start a build, SIGKILL it once ``progress()`` reaches ``reached`` (or it ends, or 240 s pass);
    returns ``progress()`` then."""
    process = spawn_builder(module, args)
    deadline = time.monotonic() + 240
    while progress() < reached and process.poll() is None and time.monotonic() < deadline:
        time.sleep(poll)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return progress()
