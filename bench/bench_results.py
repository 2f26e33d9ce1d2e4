"""The benchmarks' result files: print a result and write it as JSON next to the others (``bench/results/``)."""

from __future__ import annotations

import json
from pathlib import Path


def report(result: dict, out: Path) -> None:
    """Print ``result`` as indented JSON and write it to ``out`` (folders created), then say where."""
    text = json.dumps(result, indent=1)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"-> {out}")
