"""What the export commands share: JSON, JSON Lines and CSV files, and the check of the folder they write.

An export folder is refused unless it is new, empty, or an earlier export of the same kind: its
marker file (written last, or first as a placeholder) names the export's format.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from store import ConfigError, check_output_path


def json_number(value: Any) -> float | None:
    """A float, or None for a missing, NaN or infinite value (JSON has none of them)."""
    return None if value is None or pd.isna(value) or not math.isfinite(float(value)) else float(value)


def write_json(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_lines(path: Path, documents: list[dict[str, Any]]) -> Path:
    """One JSON document per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(document, allow_nan=False, ensure_ascii=False) + "\n"
                            for document in documents), encoding="utf-8")
    return path


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def check_export_folder(folder: str | Path, marker: str, export_format: str, kind: str) -> Path:
    """The export folder, refused unless it is new, empty, or an earlier ``kind`` export (``marker`` says so)."""
    path = check_output_path(str(folder), "export folder", folder=True)
    if not path.exists() or not any(path.iterdir()):
        return path
    try:
        ours = json.loads((path / marker).read_text(encoding="utf-8")).get("format") == export_format
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):  # missing, unreadable, not a JSON object
        ours = False
    if not ours:
        entries = sorted(entry.name for entry in path.iterdir())
        shown = ", ".join(map(repr, entries[:3])) + (", ..." if len(entries) > 3 else "")
        raise ConfigError(f"export folder {str(folder)!r} holds files that are not a {kind} export "
                          f"({shown}); choose a new or empty folder")
    return path
