"""Performance scripts: each prints its tables and writes JSON (docs/PERFORMANCE.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write a benchmark's result to ``path`` (folders created) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
