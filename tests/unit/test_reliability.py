"""Reliability and security in-process, on TorchServe's real Context: image modes and limits, safe
error text, non-finite numbers, the optimized model's safety net, trace directory permissions,
the request-size limit, models loaded with weights only and the audit wrapper. The same defects
are checked on a real TorchServe in tests/e2e/test_reliability_server.py.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, RequestContext, write_model_dir
from tests.handler_fixtures import SQRT_MODEL, npy, run, tiny_image_handler
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.image_handler import ImageClassifierHandler
from torchserve_perf.handlers.options import ImageOptions, TensorOptions, TextOptions, max_request_size
from torchserve_perf.handlers.payloads import load_npy
from torchserve_perf.handlers.tensor_handler import TensorHandler
from torchserve_perf.handlers.validation import json_safe, safe_reason
from torchserve_perf.plugins.optimizations.chain import FallbackRunner
from torchserve_perf.plugins.profiler import traces


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def image_handler(tmp_path: Path, **image: Any) -> tuple[ImageClassifierHandler, RequestContext]:
    return tiny_image_handler(tmp_path, {"image": {"resize": 40, "crop": 32, "topk": 4, **image}})


def tensor_handler(tmp_path: Path, **tensor: Any) -> tuple[TensorHandler, RequestContext]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    model_file = tmp_path / "sqrt_probe.py"
    model_file.write_text(SQRT_MODEL)
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.linear = torch.nn.Linear(4, 3)
    manifest = write_model_dir(tmp_path / "model", model_file, model)
    ctx = RequestContext(tmp_path / "model", manifest, {"handler": {"tensor": {"input_shape": [4], **tensor}}})
    handler = TensorHandler()
    handler.initialize(ctx.context)
    return handler, ctx


# ---- image modes: every mode scaled by its own range ------------------------------------------
def gray_levels(width: int = 48, height: int = 40) -> np.ndarray:
    """A smooth 8-bit pattern (bilinear resizing in 8 bits and in float then differ by rounding only)."""
    y, x = np.mgrid[0:height, 0:width]
    return (40 + 3 * x + 2 * y).clip(0, 255).astype(np.uint8)


def colour_levels(width: int = 48, height: int = 40) -> np.ndarray:
    g = gray_levels(width, height).astype(np.int32)
    return np.stack([g, 255 - g, (g * 7) % 256], axis=2).astype(np.uint8)


def same_answer(a: dict, b: dict, atol: float) -> None:
    assert list(a) == list(b), (a, b)  # same labels, same order
    for label in a:
        assert a[label] == pytest.approx(b[label], abs=atol), (a, b)


def mode_cases() -> list[tuple[str, bytes, bytes, float]]:
    """(mode, the image in that mode, its 8-bit RGB equivalent, tolerance)."""
    gray, colour = gray_levels(), colour_levels()
    rgb_of_gray = encode(Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB"))
    rgb = Image.fromarray(colour, "RGB")
    alpha = np.full(gray.shape, 255, np.uint8)
    binary = (gray > 120).astype(np.uint8) * 255
    palette = rgb.quantize(colors=32)
    cases = [
        ("L", encode(Image.fromarray(gray, "L")), rgb_of_gray, 0.0),
        ("1", encode(Image.fromarray(binary, "L").convert("1")),
         encode(Image.fromarray(np.repeat(binary[:, :, None], 3, axis=2), "RGB")), 0.0),
        ("P", encode(palette), encode(palette.convert("RGB")), 0.0),
        ("LA", encode(Image.fromarray(np.stack([gray, alpha], axis=2), "LA")), rgb_of_gray, 0.0),
        ("RGBA", encode(Image.fromarray(np.concatenate([colour, alpha[:, :, None]], axis=2), "RGBA")),
         encode(rgb), 0.0),
        ("CMYK", encode(rgb.convert("CMYK"), "TIFF"), encode(rgb), 0.0),
        # Wider than 8 bits: resized in float, so they match up to the 8-bit path's rounding.
        ("I;16", encode(Image.fromarray(gray.astype(np.uint16) * 257)), rgb_of_gray, 2e-3),
        ("I", encode(Image.fromarray(gray.astype(np.int32) * 257, "I"), "TIFF"), rgb_of_gray, 2e-3),
        ("F", encode(Image.fromarray(gray.astype(np.float32) / 255, "F"), "TIFF"), rgb_of_gray, 2e-3),
    ]
    return cases


@pytest.mark.parametrize("mode,image,equivalent,atol", mode_cases(), ids=[c[0] for c in mode_cases()])
def test_every_mode_gives_the_answer_of_its_8bit_rgb_equivalent(tmp_path, mode, image, equivalent, atol):
    assert Image.open(io.BytesIO(image)).mode == mode
    handler, ctx = image_handler(tmp_path)
    outputs, statuses = run(handler, ctx, [image, equivalent])
    assert statuses == [200, 200], outputs
    same_answer(outputs[0], outputs[1], atol)


def test_16bit_gray_is_not_white(tmp_path):
    handler, ctx = image_handler(tmp_path)
    dark16 = encode(Image.fromarray(np.full((40, 48), 20 * 257, np.uint16)))
    dark8, white8 = (encode(Image.new("RGB", (48, 40), (v, v, v))) for v in (20, 255))
    outputs, _ = run(handler, ctx, [dark16, dark8, white8])
    same_answer(outputs[0], outputs[1], 2e-3)
    assert outputs[0] != outputs[2]


# ---- image limits, checked on the header -------------------------------------------------------
def test_image_limits_refuse_before_decoding(tmp_path):
    handler, ctx = image_handler(tmp_path, max_pixels=1_000_000, max_aspect_ratio=10, max_resized_pixels=40 * 400)
    tall, wide = encode(Image.new("RGB", (1, 4000))), encode(Image.new("RGB", (6000, 1)))
    big = encode(Image.new("L", (1200, 1000)))
    ok_ratio = encode(Image.new("RGB", (300, 40)))  # 7.5:1, resized 300x40 -> 300x40
    outputs, statuses = run(handler, ctx, [tall, wide, big, ok_ratio])
    assert statuses == [422, 422, 413, 200], outputs
    assert "aspect ratio of 4000:1" in outputs[0]["error"]["message"]
    assert "max_pixels" in outputs[2]["error"]["message"]
    # The resized size on its own: 10:1 passes the ratio but 40x400 -> resize 40 gives 400x40 = 16,000 pixels.
    handler, ctx = image_handler(tmp_path / "small", max_resized_pixels=40 * 40 + 1)
    outputs, statuses = run(handler, ctx, [encode(Image.new("RGB", (200, 40))), encode(Image.new("RGB", (40, 40)))])
    assert statuses == [422, 200] and "max_resized_pixels" in outputs[0]["error"]["message"]


def test_image_options_are_validated():
    with pytest.raises(Exception, match="max_resized_pixels"):
        ImageOptions(max_resized_pixels=100)
    with pytest.raises(Exception, match="max_aspect_ratio"):
        ImageOptions(max_aspect_ratio=0.5)
    assert ImageOptions().max_pixels < Image.MAX_IMAGE_PIXELS / 3  # far below Pillow's own bomb limit


def test_jpeg_draft_decodes_a_large_jpeg_at_reduced_scale(tmp_path):
    handler, ctx = image_handler(tmp_path)
    big = encode(Image.fromarray(np.repeat(np.repeat(colour_levels(), 40, axis=0), 40, axis=1)), "JPEG")
    image = Image.open(io.BytesIO(big))
    image.draft(image.mode, (48, 40))
    assert image.size[0] < 1920  # Pillow can decode it at a fraction of its pixels...
    outputs, statuses = run(handler, ctx, [big])
    assert statuses == [200]  # ...and the handler serves it


def test_image_errors_say_what_is_wrong_without_object_reprs(tmp_path):
    handler, ctx = image_handler(tmp_path)
    whole = encode(Image.fromarray(colour_levels()))
    truncated = whole[:len(whole) // 2]
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    outputs, statuses = run(handler, ctx, [b"\x89PNG\r\n\x1a\nSECRET-BYTES", truncated, svg,
                                           {"image": base64.b64encode(b"GIF89a-SECRET").decode()}])
    assert statuses == [400] * 4, outputs
    for out in outputs:
        message = out["error"]["message"]
        assert "not a readable JPEG or PNG image" in message
        assert "BytesIO" not in message and "0x" not in message and "SECRET" not in message


# ---- request bytes never in errors -------------------------------------------------------------
def test_npy_header_text_is_not_echoed(tmp_path, caplog):
    handler, ctx = tensor_handler(tmp_path)
    raw = npy(np.zeros((2, 4), np.float32))
    bad_dtype = raw.replace(b"'<f4'", b"'SECRET'")
    bad_shape = raw.replace(b"(2, 4)", b"(SECRET)")
    huge = raw.replace(b"(2, 4)", b"(99999999999, 4)")
    with caplog.at_level(logging.INFO):
        outputs, statuses = run(handler, ctx, [bad_dtype, bad_shape, huge, raw])
    assert statuses == [400, 400, 413, 200], outputs
    assert "dtype" in outputs[0]["error"]["message"]
    assert "max_elements" in outputs[2]["error"]["message"]
    text = json.dumps(outputs) + caplog.text
    assert "SECRET" not in text and "descr" not in text


def test_decoders_do_not_quote_their_input(tmp_path, caplog):
    handler, ctx = tensor_handler(tmp_path)
    with caplog.at_level(logging.INFO):
        outputs, statuses = run(handler, ctx, [b"{\"inputs\": [SECRET]}", {"inputs": ["SECRET", 1, 2, 3]},
                                               b"[\xffSECRET]", {"inputs": [[1, 2], [3]]}])
    assert statuses == [400, 400, 400, 400], outputs
    assert "SECRET" not in json.dumps(outputs) + caplog.text


@pytest.mark.parametrize("exc", [ValueError("bad 'SECRET' in header {'descr': 'SECRET'}"),
                                 OSError("cannot identify image file <_io.BytesIO object at 0x7f3a2b1c9d80>"),
                                 UnicodeDecodeError("utf-8", b"\xffSECRET", 0, 1, "invalid start byte")])
def test_safe_reason_drops_quoted_input_and_addresses(exc):
    text = safe_reason(exc)
    assert "SECRET" not in text and "0x7f" not in text and "BytesIO" not in text and text


def test_load_npy_views_the_data_instead_of_trusting_the_header():
    raw = npy(np.arange(6, dtype=np.float64).reshape(2, 3))
    np.testing.assert_array_equal(load_npy(raw), np.arange(6).reshape(2, 3))
    with pytest.raises(RequestError, match="declares 48 bytes of data and 40 follow"):
        load_npy(raw[:-8])
    with pytest.raises(RequestError, match="object arrays"):
        load_npy(npy(np.array([{"a": 1}], dtype=object)))


# ---- non-finite numbers --------------------------------------------------------------------------
def test_non_finite_input_and_output_get_422_and_a_setting_allows_them(tmp_path):
    handler, ctx = tensor_handler(tmp_path / "strict")
    nan_npy = npy(np.full((1, 4), np.nan, np.float32))
    inf_json = b'{"inputs": [[Infinity, 1, 2, 3]]}'
    overflow = {"inputs": [[1e300, 1, 2, 3]]}  # finite as float64, Inf as float32
    negative = {"inputs": [[-1.0, 1, 2, 3]]}  # sqrt(-1) in the model: a NaN output
    outputs, statuses = run(handler, ctx, [nan_npy, inf_json, overflow, negative, {"inputs": [[1.0, 1, 2, 3]]}])
    assert statuses == [422, 422, 422, 422, 200], outputs
    assert "input holds 4 non-finite" in outputs[0]["error"]["message"]
    assert "output holds 1 non-finite" in outputs[3]["error"]["message"]
    for out in outputs:
        json.loads(json.dumps(out, allow_nan=False))  # every body is strict JSON

    handler, ctx = tensor_handler(tmp_path / "allowed", allow_non_finite=True)
    outputs, statuses = run(handler, ctx, [nan_npy, negative])
    assert statuses == [200, 200]
    assert outputs[0] == [[None] * 4] and outputs[1][0][3] is None  # NaN/Inf answered as null
    json.dumps(outputs, allow_nan=False)


def test_json_safe_replaces_only_non_finite_floats():
    assert json_safe({"a": [1.0, float("nan"), float("-inf"), 2], "b": "x"}) == {"a": [1.0, None, None, 2], "b": "x"}


# ---- FallbackRunner --------------------------------------------------------------------------
def test_fallback_counts_only_failures_eager_would_have_served(caplog):
    torch.manual_seed(0)
    eager = torch.nn.Linear(4, 3).eval()
    traced = torch.jit.trace(eager, (torch.randn(2, 4),))

    def fragile(x):
        if x.shape[0] == 5:
            raise RuntimeError("batch 5 was never compiled")
        return traced(x)

    runner = FallbackRunner(fragile, eager, ["torchscript"], limit=2)
    with torch.inference_mode(), caplog.at_level(logging.INFO):
        for _ in range(5):  # a wrong shape: both fail, eager's error goes to the caller, nothing is counted
            with pytest.raises(RuntimeError):
                runner(torch.randn(1, 2))
        assert runner.failures == 0 and runner.bad_inputs == 5
        good = torch.randn(3, 4)
        assert torch.equal(runner(good), traced(good))  # still the optimized model
        five = torch.randn(5, 4)
        for _ in range(3):  # the optimized model's own failure: eager serves it, and it counts
            assert torch.allclose(runner(five), eager(five))
    assert runner.failures == 2
    assert caplog.text.count("both refused") == 5
    assert caplog.text.count("where eager succeeded") == 2 and caplog.text.count("staying on eager") == 1


# ---- trace directories -----------------------------------------------------------------------
def test_an_open_trace_directory_is_tightened(tmp_path, caplog):
    open_dir = tmp_path / "traces"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    with caplog.at_level(logging.INFO):
        traces.make_private_dir(open_dir)
    assert stat.S_IMODE(open_dir.stat().st_mode) == 0o700
    assert "was mode 777; tightened to 700" in caplog.text
    nested = tmp_path / "new" / "deeper"
    traces.make_private_dir(nested)
    assert stat.S_IMODE(nested.stat().st_mode) == 0o700 and stat.S_IMODE(nested.parent.stat().st_mode) == 0o700
    path = nested / "w.1.pt.trace.json"
    traces.write_json({"traceEvents": []}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_directory_we_cannot_change_is_warned_about_once(tmp_path, caplog, monkeypatch):
    open_dir = tmp_path / "shared"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    monkeypatch.setattr(traces.os, "geteuid", lambda: os.getuid() + 1)  # as if someone else owned it
    with caplog.at_level(logging.WARNING):
        traces.make_private_dir(open_dir)
        traces.make_private_dir(open_dir)
    assert caplog.text.count("not ours to change") == 1
    os.chmod(open_dir, 0o700)


# ---- request size --------------------------------------------------------------------------------
def test_max_request_size_follows_the_handlers_limits():
    default = max_request_size([{"handler": {"image": {}}}])
    assert default == int(ImageOptions().max_request_mb * 2 ** 20 * 4 / 3) + 64 * 1024
    assert max_request_size([{"handler": {"text": {"max_request_mb": 2}}}, {"handler": {"tensor": {"max_request_mb": 40}}}]) \
        == int(40 * 2 ** 20 * 4 / 3) + 64 * 1024
    assert TextOptions().max_request_mb <= TensorOptions().max_request_mb


def test_write_server_config_sets_max_request_size(tmp_path):
    from torchserve_perf.tools.model_store import default_specs, write_server_config

    props = dict(line.split("=", 1) for line in write_server_config(tmp_path).read_text().splitlines()
                 if "=" in line and not line.startswith("#"))
    assert int(props["max_request_size"]) == max_request_size([s.model_config for s in default_specs()])
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:"), props[key]
    assert "disable_token_authorization" not in props


# ---- safe defaults -------------------------------------------------------------------------------
# No eval/exec and no shell commands: ruff's S rules in `make lint`. Those rules see a bare "0.0.0.0"
# but not one inside a URL or a properties line, nor token auth switched off: that stays a test.
def python_sources() -> list[Path]:
    return sorted(p for root in ("torchserve_perf", "scripts") for p in (REPO / root).rglob("*.py")
                  if "__pycache__" not in p.parts)


def test_servers_and_apps_listen_on_loopback_with_token_auth():
    offenders = []
    for path in python_sources():
        text = path.read_text()
        if path.relative_to(REPO).as_posix() == "torchserve_perf/tools/archive/kserve.py":
            # --layout kserve: inside a pod, the Service and KServe's runtime must reach these two ports
            text = text.replace('"http://0.0.0.0:8085"', '"in-pod:8085"').replace('"http://0.0.0.0:8082"', '"in-pod:8082"')
        for match in re.finditer(r"(0\.0\.0\.0|disable_token_authorization\W+true|enable_token_auth\S*\s*false)", text,
                                 re.IGNORECASE):
            offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
    assert not offenders, offenders
    litserve = (REPO / "torchserve_perf" / "fixtures" / "litserve_app.py").read_text()
    assert "127.0.0.1" in litserve or "localhost" in litserve


def test_models_load_with_weights_only():
    loads = []
    for path in python_sources():
        for line in path.read_text().splitlines():
            if re.search(r"\btorch\.load\(", line):
                loads.append((path.name, line.strip()))
    assert loads
    assert all("weights_only=True" in line for _, line in loads if _ in ("loading.py",)), loads
    assert not [load for load in loads if "weights_only=False" in load[1]], loads


# ---- make audit: a database that cannot be reached is not a clean report -------------------------
def audit_module() -> Any:
    from torchserve_perf.tools import audit

    return audit


@pytest.mark.parametrize("returncode,stdout,stderr,verdict", [
    (0, '{"dependencies": [{"name": "numpy", "version": "2.0", "vulns": []}]}', "", "clean"),
    (1, '{"dependencies": [{"name": "pillow", "version": "9.0", "vulns": [{"id": "PYSEC-1", "fix_versions": ["9.1"]}]}]}',
     "", "vulnerable"),
    (1, "", "ConnectionError: HTTPSConnectionPool(host='pypi.org', port=443): Max retries exceeded", "unreachable"),
    (0, '{"dependencies": []}', "", "unreachable"),  # nothing was checked: not clean
    # What an offline run here prints: every package skipped as "not found", exit 0.
    (0, '{"dependencies": [{"name": "torch", "version": "2.13.0", "skip_reason": "Dependency not found on PyPI and '
        'could not be audited: torch (2.13.0)"}], "fixes": []}', "", "unreachable"),
    (2, "", "error: unrecognized arguments", "error"),
])
def test_audit_verdicts(returncode, stdout, stderr, verdict):
    audit = audit_module()
    result = audit.interpret(subprocess.CompletedProcess(["pip-audit"], returncode, stdout, stderr))
    assert result.verdict == verdict, result
    assert result.exit_code == (0 if verdict == "clean" else 1 if verdict == "vulnerable" else 2)
    assert ("NOT CHECKED" in result.report()) == (verdict in ("unreachable", "error"))


def test_audit_pins_the_environment_without_local_tags():
    pins = audit_module().pinned_environment()
    names = {p.split("==")[0].lower() for p in pins}
    assert {"torch", "torchserve", "pillow", "numpy"} <= names and "torchserve-perf" not in names
    assert all("==" in p and "+" not in p for p in pins)


QUOTING_MODEL = '''
import torch
from torch import nn


class Quoting(nn.Module):
    """Refuses negative inputs with a message that quotes them, as user models may."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        if (x < 0).any():
            raise ValueError(f"refused input 'SECRET{x.sum().item()}' <tensor at 0x7f00deadbeef>")
        return self.linear(x)
'''


def test_model_errors_do_not_quote_the_input(tmp_path, caplog):
    (tmp_path / "quoting.py").write_text(QUOTING_MODEL)
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.linear = torch.nn.Linear(4, 3)
    manifest = write_model_dir(tmp_path / "model", tmp_path / "quoting.py", model)
    ctx = RequestContext(tmp_path / "model", manifest, {"handler": {"tensor": {"input_shape": [4]}}})
    handler = TensorHandler()
    handler.initialize(ctx.context)
    with caplog.at_level(logging.INFO):
        outputs, statuses = run(handler, ctx, [[1.0, 2.0, 3.0, 4.0], [-1.0, 2.0, 3.0, 4.0]])
    assert statuses == [200, 422]
    assert "the model could not process this input: ValueError: refused input" in outputs[1]["error"]["message"]
    assert "SECRET" not in json.dumps(outputs) and "0x7f00" not in json.dumps(outputs)
