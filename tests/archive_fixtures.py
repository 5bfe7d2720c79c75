"""What the archive tests share: a plain model file, a project folder fixture and the one-line usage error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import class_from_file
from torchserve_perf.tools import archive

PLAIN = '''import torch
from torch import nn


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * 2.0
'''


def plain_class(folder: Path) -> Any:
    """``Plain``, from PLAIN written to ``folder/plain.py`` (the file the archives are built from)."""
    (folder / "plain.py").write_text(PLAIN)
    return class_from_file(folder / "plain.py", "Plain")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder for archive commands, made the current directory."""
    monkeypatch.chdir(tmp_path)
    torch.save(plain_class(tmp_path)().state_dict(), tmp_path / "plain.pt")
    return tmp_path


def _error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        code = archive.main(list(argv))
        raise SystemExit(code)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


EAGER = ("--name", "m", "--model-file", "plain.py", "--weights", "plain.pt")
