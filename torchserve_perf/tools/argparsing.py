"""The command line's one habit: a usage error is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class CommandParser(argparse.ArgumentParser):
    """argparse, except that a usage error prints one line (``prog: error: ...``), not the usage block."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(2)


def command_parser(name: str, description: str, **kwargs: object) -> CommandParser:
    """The parser of ``torchserve-perf NAME``."""
    return CommandParser(prog=f"torchserve-perf {name}", description=description, **kwargs)  # type: ignore[arg-type]
