"""The example notebook runs top to bottom against a real store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY_ARGS

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK = NOTEBOOKS / "quickstart.ipynb"


def test_quickstart_notebook_runs(tiny_model: Callable[[str], Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from builders.collect import main

    store = tmp_path / "s.zarr"
    assert main(["--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS]) == 0
    monkeypatch.setenv("ACTIVATION_STORE", str(store))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
def test_massive_activations_notebook_finds_smollm2s(smollm2_store: tuple[Path, str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Which tokens, which channel, which layers: the notebook's answers are the store's."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from analysis.query import tokens_above

    monkeypatch.setenv("ACTIVATION_STORE", str(smollm2_store[0]))
    notebook = nbformat.read(NOTEBOOKS / "massive-activations.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    verdict = outputs[-1]["text"]
    massive = tokens_above(str(smollm2_store[0]), "linf_norm", "middle", threshold=100, times_median=1000,
                           median_of="mean_abs", limit=None, context=0)
    assert len(massive) == 4 and set(massive.position) == {0}  # the first token of each of the 4 rows
    channel = int(massive.argmax_channel.iloc[0])
    assert "layer middle: 4 massive activations" in verdict and f"in channel {channel}" in verdict
    assert "100% on the first token of a row" in verdict


def _readme_notebook_snippet() -> str:
    readme = (NOTEBOOKS.parent / "README.md").read_text()
    after = readme.split("Then, in a notebook:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("folder", ["", "notebooks"])
def test_the_readme_snippet_runs_from_the_root_and_from_notebooks(folder: str, tmp_path: Path,
                                                                  tiny_model: Callable[[str], Path]) -> None:
    """The quick start's snippet, as written, in a copy of the layout: from the repository root and from
    notebooks/ (a relative path there would miss the store)."""
    import subprocess
    import sys

    from builders.collect import main

    store = tmp_path / "stores" / "activations.zarr"
    assert main(["--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS]) == 0
    (tmp_path / "catalog.yaml").write_text("stores:\n  smollm2-pydoc:\n    url: stores/activations.zarr\n")
    (tmp_path / "notebooks").mkdir()
    script = _readme_notebook_snippet() + "\nprint(dict(ds.sizes))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path / folder, capture_output=True, text=True,
                          check=False, timeout=120, env={**__import__("os").environ,
                                                         "ACTIVATION_CATALOG": str(tmp_path / "catalog.yaml")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'token'" in done.stdout
