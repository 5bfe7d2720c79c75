"""How a comparison ends: its report written as JSON and Markdown, and its work folder kept only on failure."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping


def write_report(out: Path, name: str, report: Mapping[str, Any], text: str) -> None:
    """Write ``name.json`` and ``name.md`` under ``out``, and print the Markdown and where it went."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(text)
    print("\n" + text)
    print(f"wrote {out / f'{name}.md'} and {out / f'{name}.json'} in {report['wall_s']:.0f} s")


def finish(work: Path, failed: str) -> int:
    """Exit status of a run: 0, its work folder removed; or 1 when ``failed`` names what failed,
    the folder kept for its server logs."""
    if failed:
        print(f"failed: {failed}; server folders and logs kept in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0
