"""Load the archived model: eager (model file + state dict), TorchScript, or a torch.export program."""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import zipfile
from types import ModuleType
from typing import Any, Mapping

import torch


def load_archived_model(model_dir: str, manifest: Mapping[str, Any], device: torch.device) -> torch.nn.Module:
    model_info = manifest.get("model") or {}
    serialized = model_info.get("serializedFile")
    model_file = model_info.get("modelFile")
    weights = os.path.join(model_dir, serialized) if serialized else None
    if model_file:
        return load_eager(model_dir, model_file, weights, device)
    if not weights or not os.path.isfile(weights):
        raise RuntimeError(
            f"the archive has neither a --model-file nor a --serialized-file ({weights!r}); "
            "archive a model file with its state dict, a TorchScript file or a torch.export .pt2")
    if weights.endswith(".pt2"):
        return torch.export.load(weights).module().to(device)
    if _is_torchscript(weights):
        return torch.jit.load(weights, map_location=device)
    raise RuntimeError(f"{os.path.basename(weights)} is not TorchScript or a torch.export program; "
                       "a state dict needs --model-file with the nn.Module class")


def eval_mode(model: Any) -> Any:
    """Put a loaded model in inference mode; a torch.export module refuses .eval() and needs none."""
    try:
        return model.eval()
    except NotImplementedError:  # exported programs captured their mode at export time
        return model


def load_eager(model_dir: str, model_file: str, weights: str | None, device: torch.device) -> torch.nn.Module:
    module = _import_file(os.path.join(model_dir, model_file))
    classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass)
               if obj.__module__ == module.__name__ and issubclass(obj, torch.nn.Module)]
    if len(classes) != 1:
        raise RuntimeError(f"{model_file} must define exactly one nn.Module class, found "
                           f"{[c.__name__ for c in classes]}")
    model = classes[0]()
    if weights:
        # weights_only: a state dict needs no pickled code, and refusing code is safer.
        state = torch.load(weights, map_location=device, weights_only=True)
        model.load_state_dict(state)
    return model.to(device)


def _import_file(path: str) -> ModuleType:
    """Import the archived model file by its path; sys.path is left alone (TorchServe already puts
    the model directory there, so a model file's own sibling imports still resolve)."""
    name = os.path.splitext(os.path.basename(path))[0]
    if name in sys.modules and os.path.abspath(getattr(sys.modules[name], "__file__", "") or "") == os.path.abspath(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import the model file {os.path.basename(path)}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered first: dataclasses and pickling look the module up
    spec.loader.exec_module(module)
    return module


def _is_torchscript(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False
