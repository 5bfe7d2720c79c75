"""The tools' own YAML files (bench suites, compare goals): read, and keys checked, with one-line errors
that name the key and the fix. Each file format raises its own error type (a ValueError)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping


def read_yaml(path: Path, error: type[ValueError]) -> Any:
    """``path``'s YAML; ``error`` with a one-line message when it cannot be read or parsed."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None


def reject_unknown(where: str, data: Mapping[str, Any], known: Iterable[str], error: type[ValueError]) -> None:
    """``error`` naming the first key of ``data`` not in ``known``, and the closest known one."""
    names = sorted(known)
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise error(f"{where}: unknown key {key!r}; {hint}known keys: {', '.join(names)}")
