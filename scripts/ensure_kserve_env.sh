#!/usr/bin/env bash
# .venv-kserve: the kserve package (its InferenceService models and its v2 REST client) for the
# deploy and v2 tests. It lives apart from .venv because every kserve release pins psutil<6,
# protobuf<7 and pandas<3, which clash with our pins; it needs no torch.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${KSERVE_VENV:-.venv-kserve}"
REQS="$(dirname "$0")/../requirements-kserve.txt"
STAMP="$VENV/.installed"
if [ -f "$STAMP" ] && [ "$STAMP" -nt "$REQS" ]; then
  exit 0
fi
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
touch "$STAMP"
