"""Loading the model the way a worker will, before the archive is built.

The load runs in a child process (:mod:`torchserve_perf.tools.archive.load_check`) whose model
directory holds the model, its extra files and nothing else, with that directory importable as
TorchServe makes it: a model file that imports its own sibling modules (``--extra-files``) loads
here exactly when it will load in a worker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from torchserve_perf.tools.archive.plan import ArchiveError, ArchivePlan
from torchserve_perf.tools.archive.staging import copy_into

CHECK_TIMEOUT_S = 600


def verify_model(plan: ArchivePlan, input_shape: Optional[Sequence[int]], dtype: str = "float32") -> str:
    """Load the model the way a worker will (and run one row when the input shape is known); what it did."""
    source = plan.source
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        model_dir = Path(tmp)
        shutil.copy2(source.serialized_file, model_dir / source.serialized_file.name)
        manifest: dict[str, Any] = {"model": {"serializedFile": source.serialized_file.name}}
        if source.model_file is not None:
            shutil.copy2(source.model_file, model_dir / source.model_file.name)
            manifest["model"]["modelFile"] = source.model_file.name
        for path in plan.extra_files:
            copy_into(path, model_dir)
        request = json.dumps({"model_dir": str(model_dir), "manifest": manifest, "kind": source.kind,
                              "input_shape": list(input_shape) if input_shape else None, "dtype": dtype})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(model_dir), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "torchserve_perf.tools.archive.load_check", request]
        done = subprocess.run(command, cwd=model_dir, env=env, capture_output=True,  # noqa: S603 (our own module)
                              text=True, timeout=CHECK_TIMEOUT_S)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if done.returncode != 0 or "error" in result or "ok" not in result:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ArchiveError(result.get("error") or f"the model check crashed: {tail[:300]} (give --no-verify to skip it)")
    return str(result["ok"])
