"""Every bench script still imports and parses its flags (no timing here: bench/ prints its own ratios).

Two scripts once rotted silently when the APIs they import changed; this catches that in CI.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.name for path in (REPO / "bench").glob("*.py") if not path.name.startswith("_"))


def test_every_bench_script_is_found() -> None:
    assert {"collect_bench.py", "lease_bench.py", "vectors_bench.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bench_script_imports_and_explains_itself(script: str) -> None:
    done = subprocess.run([sys.executable, f"bench/{script}", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_the_vectors_bench_runs_end_to_end_on_a_tiny_model(tiny_model: Callable[[str], Path]) -> None:
    """Both halves, at toy sizes: the build path and the query path still run (the figures mean nothing here)."""
    done = subprocess.run([sys.executable, "bench/vectors_bench.py", "--model", str(tiny_model("llama")),
                           "--device", "cpu", "--docs", "8", "--max_seq_len", "32", "--batch_size", "4",
                           "--repeats", "1", "--nn_docs", "3000", "--width", "16", "--nn_repeats", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ratio build / bare" in done.stdout and "agree on the top 10             : yes" in done.stdout


def test_the_store_fit_bench_runs_end_to_end_at_toy_size() -> None:
    """Builds its synthetic store and fits every series with the verdicts (the figures mean nothing here)."""
    done = subprocess.run([sys.executable, "bench/fit_store_bench.py", "--tokens", "8000", "--old_layers", "0",
                           "--real", "/nonexistent", "--gof_precision", "0.2"], check=False, cwd=REPO,
                          capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(231 series)" in done.stdout and "(39 series)" in done.stdout and "verdicts: {" in done.stdout
