"""The image families: each builds, answers [batch, 1000] and has its published parameter count;
each model file is one class (TorchServe's rule for --model-file) and imports no torchvision."""

from __future__ import annotations

import ast
import importlib.util

import pytest
import torch
from torch import nn

from torchserve_perf.models.zoo import FAMILIES, calibrate_batch_norms, family_state_dict, find_family

NAMES = sorted(FAMILIES)


@pytest.mark.parametrize("name", NAMES)
def test_family_builds_with_published_size_and_shape(name: str) -> None:
    family = FAMILIES[name]
    model = family.make().eval()
    assert sum(p.numel() for p in model.parameters()) == family.published_parameters
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_model_file_defines_one_class_and_no_torchvision(name: str) -> None:
    from ts.utils.util import list_classes_from_module

    family = FAMILIES[name]
    spec = importlib.util.spec_from_file_location(f"zoo_file_{name}", family.path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes = list_classes_from_module(module)
    assert [c.__name__ for c in classes] == [family.class_name]
    tree = ast.parse(open(family.path).read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "torchvision" for name in imported)


def test_seeded_weights_are_deterministic_and_calibrated() -> None:
    family = FAMILIES["mobilenet_v3_large"]
    first, second = family_state_dict(family.make), family_state_dict(family.make)
    assert all(torch.equal(first[k], second[k]) for k in first)
    model = family.make()
    model.load_state_dict(first)
    with torch.inference_mode():
        out = model.eval()(torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    # Without calibration these logits are ~1e-10 apart: every class equally likely.
    assert float((out[0] - out[1]).abs().mean()) > 1e-4


def test_calibration_restores_momentum_and_eval_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.01))
    calibrate_batch_norms(model, torch.randn(2, 3, 8, 8) * 5 + 3)
    norm = model[1]
    assert isinstance(norm, nn.BatchNorm2d) and norm.momentum == 0.01 and not model.training
    assert norm.running_var is not None and float(norm.running_var.mean()) > 1.5  # from the batch, not the default 1


def test_unknown_family_names_the_choices() -> None:
    with pytest.raises(KeyError, match="resnet50"):
        find_family("resnet51")


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision is not importable here")
@pytest.mark.parametrize("name,builder", [("resnet50", "resnet50"), ("mobilenet_v3_large", "mobilenet_v3_large"),
                                          ("efficientnet_b0", "efficientnet_b0"), ("vit_b16", "vit_b_16")])
def test_state_dict_matches_torchvision(name: str, builder: str) -> None:
    """Where torchvision imports, its architectures' state dicts load into ours key for key."""
    try:
        import torchvision.models as tv  # only here: where torchvision exists
    except Exception as exc:  # installed but broken beside this torch
        pytest.skip(f"torchvision does not import: {exc}")
    theirs = getattr(tv, builder)().state_dict()
    ours = FAMILIES[name].make().state_dict()
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in ours.items()}
