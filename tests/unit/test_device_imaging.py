"""Device-side image preprocessing (handlers/device_imaging.py): uint8 to the device, resize there.

On CPU the device path must give the Pillow path's numbers within 2/255 of the [0, 1] range on
every pixel (both round the resized image to 8 bits, and Pillow resizes only the crop's source box); everything it does not take (.npy, JSON,
16-bit images) and every error goes through the Pillow path unchanged. nvjpeg is exercised with
a fake batch decoder that fails, so the per-request fallback is tested without a GPU.
"""


from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import png_bytes
from tests.handler_fixtures import npy, run, tiny_image_handler
from torchserve_perf.handlers import device_imaging
from torchserve_perf.handlers.device_imaging import DeviceImages, Nvjpeg, stage, uses_pinned_memory, wanted
from torchserve_perf.handlers.options import ImageOptions
from torchserve_perf.plugins.decode_pool import DecodeConfig, DecodePool, Failure
from torchserve_perf.tools.loadgen import sample_image

CUDA = torch.cuda.is_available()


STEP = 2 / 255 + 1e-5  # the tolerance: two 8-bit rounding steps (each path's, and Pillow's crop box), in [0, 1]


def encoded(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, fmt, **save)
    return buffer.getvalue()


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random RGB, so the resize has real work to do."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def unnormalised(x: torch.Tensor, options: ImageOptions) -> torch.Tensor:
    mean = torch.tensor(options.mean).view(1, 3, 1, 1)
    std = torch.tensor(options.std).view(1, 3, 1, 1)
    return x.float().cpu() * std + mean


def assert_close_to_pillow(got: object, want: object, options: ImageOptions) -> None:
    assert isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor), (got, want)
    assert got.shape == want.shape
    assert (unnormalised(got, options) - unnormalised(want, options)).abs().max().item() <= STEP


@pytest.fixture
def handler(tmp_path: Path):
    handler, ctx = tiny_image_handler(tmp_path, {})
    return handler, ctx


@pytest.fixture
def pool():
    pool = DecodePool(2)
    yield pool
    pool.close()


def bodies_of_every_kind() -> list:
    gray16 = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30)
    return [
        sample_image(),  # the 120 kB JPEG, 640x480
        encoded(noise(70, 53, seed=1)),  # odd-sized PNG
        encoded(noise(48, 64, seed=2)[:, :, 0], mode="L"),  # 8-bit gray
        encoded(np.dstack([noise(50, 60, seed=3), np.full((50, 60), 128, np.uint8)]), mode="RGBA"),
        encoded(gray16),  # 16-bit (I;16): the Pillow path scales it by its range
        {"image": base64.b64encode(encoded(noise(41, 45, seed=4))).decode()},  # JSON: the Pillow path
        npy(np.random.default_rng(5).normal(size=(3, 32, 32)).astype(np.float32)),  # .npy: the Pillow path
        b"not an image at all",
        encoded(noise(70, 53, seed=1)),  # same size as the second: one resize batch
    ]


def test_on_cpu_every_request_matches_the_pillow_path(handler, pool):
    handler, _ = handler
    options = handler.settings.options
    bodies = bodies_of_every_kind()
    device = DeviceImages(options, torch.device("cpu")).decode_all(bodies, handler.decode, pool)
    pillow = handler.decode_all(bodies)
    assert len(device) == len(bodies)
    for i, (got, want) in enumerate(zip(device, pillow)):
        if isinstance(want, Failure):
            assert isinstance(got, Failure) and got.error.status == want.error.status, i
            assert got.error.message == want.error.message
        else:
            assert_close_to_pillow(got, want, options)
    for i in (4, 5, 6):  # not resized on the device: exactly the Pillow path's tensor
        assert torch.equal(device[i], pillow[i])
    assert torch.equal(device[1], device[8])


def test_rounding_is_the_only_difference_at_resnet_settings():
    options = ImageOptions()  # resize 256, crop 224
    raw = sample_image(width=333, height=517, seed=3)
    pixels = device_imaging.decode_pixels(raw, options)
    assert pixels is not None and pixels.target == (256, 397)
    from torchserve_perf.handlers import imaging

    image = imaging.decode(imaging.open_image(raw, options.formats), pixels.target)
    want = torch.from_numpy(imaging.resize_crop_pixels(image, pixels.target, options.crop) / np.float32(255.0))
    want = want.permute(2, 0, 1)
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    got = device_imaging.resize_crop_normalise(stage([pixels.data], torch.device("cpu"))[0][None], pixels.target,
                                               options.crop, zero, one)[0]
    difference = (got - want).abs()
    assert difference.max().item() <= STEP
    assert (difference > 1e-6).float().mean().item() < 0.25  # most pixels are identical


def test_limits_are_checked_before_the_device_path_decodes(tmp_path: Path, pool):
    handler, _ = tiny_image_handler(tmp_path, {"image": {"resize": 40, "crop": 32, "max_pixels": 1000}})
    options = handler.settings.options
    out = DeviceImages(options, torch.device("cpu")).decode_all([png_bytes((64, 48)), png_bytes((30, 30))],
                                                               handler.decode, pool)
    assert isinstance(out[0], Failure) and out[0].error.status == 413 and "max_pixels" in out[0].error.message
    assert isinstance(out[1], torch.Tensor)


def test_stage_packs_images_into_one_buffer_and_views_them_back():
    arrays = [noise(5, 7, seed=s) for s in range(3)] + [noise(9, 4, seed=9)]
    views = stage(arrays, torch.device("cpu"))
    for array, view in zip(arrays, views):
        assert view.shape == (3, *array.shape[:2]) and view.dtype == torch.uint8
        assert torch.equal(view.permute(1, 2, 0), torch.from_numpy(array.copy()))
    assert len({v.untyped_storage().data_ptr() for v in views}) == 1  # one buffer, one copy


@pytest.mark.parametrize("device, pinned", [("cpu", False), ("cuda", True), ("cuda:1", True), ("meta", False)])
def test_pinned_memory_only_for_cuda(device, pinned):
    assert uses_pinned_memory(torch.device(device)) is pinned


@pytest.mark.parametrize("on_device, device, expected", [
    ("auto", "cpu", False), ("auto", "cuda", True), ("always", "cpu", True), ("never", "cuda", False)])
def test_when_images_go_to_the_device(on_device, device, expected):
    assert wanted(DecodeConfig(on_device=on_device), torch.device(device)) is expected
    made = DeviceImages.for_handler(DecodeConfig(on_device=on_device, nvjpeg="off"), ImageOptions(),
                                    torch.device("cpu")) if device == "cpu" else None
    assert (made is not None) is (expected and device == "cpu")


# ---- nvjpeg, faked ---------------------------------------------------------------------------------
class FakeNvjpeg:
    """Decodes like nvjpeg's batch call (3xHxW uint8), but the whole call fails when it holds a CMYK JPEG,
    and a single call fails on it too: the request must then take the CPU path."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, data: list[torch.Tensor]) -> list[torch.Tensor]:
        self.calls.append(len(data))
        images = [Image.open(io.BytesIO(t.numpy().tobytes())) for t in data]
        if any(image.mode == "CMYK" for image in images):
            raise RuntimeError("nvjpeg: unsupported colour space")
        return [torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1) for image in images]


def test_nvjpeg_decodes_jpegs_as_a_batch_and_falls_back_per_request(handler, pool):
    handler, _ = handler
    options = handler.settings.options
    fake = FakeNvjpeg()
    cmyk = io.BytesIO()
    Image.fromarray(noise(40, 44, seed=6)).convert("CMYK").save(cmyk, "JPEG", quality=95)
    whole = encoded(noise(80, 96, seed=9), "JPEG", quality=95)
    truncated = whole[:len(whole) * 2 // 3]  # a valid header, then the scan stops short
    bodies = [encoded(noise(48, 64, seed=7), "JPEG", quality=95), cmyk.getvalue(), png_bytes((50, 40)),
              truncated, encoded(noise(48, 64, seed=8), "JPEG", quality=95)]
    out = DeviceImages(options, torch.device("cpu"), Nvjpeg(fake)).decode_all(bodies, handler.decode, pool)
    pillow = handler.decode_all(bodies)
    # One batch call with the four JPEGs; it fails, so each is tried alone; the CMYK one and the
    # truncated one fail alone and take the CPU path; the PNG never reaches nvjpeg.
    assert fake.calls == [4, 1, 1, 1, 1]
    for i in (0, 1, 2, 4):
        assert_close_to_pillow(out[i], pillow[i], options)
    assert isinstance(out[3], Failure) and out[3].error.status == 400
    assert out[3].error.message == pillow[3].error.message


def test_nvjpeg_batch_that_succeeds_is_one_call(handler, pool):
    handler, _ = handler
    fake = FakeNvjpeg()
    jpeg = encoded(noise(48, 64, seed=7), "JPEG", quality=95)
    out = DeviceImages(handler.settings.options, torch.device("cpu"), Nvjpeg(fake)).decode_all(
        [jpeg, jpeg, jpeg], handler.decode, pool)
    assert fake.calls == [3] and all(isinstance(o, torch.Tensor) and o.shape == (1, 3, 32, 32) for o in out)


def test_nvjpeg_needs_cuda_and_torchvision(monkeypatch):
    decoder, why = Nvjpeg.load(torch.device("cpu"))
    assert decoder is None and "not CUDA" in why
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    decoder, why = Nvjpeg.load(torch.device("cuda"))
    assert decoder is None and "torchvision.io is not importable" in why


# ---- the image handler with handler.decode.on_device -------------------------------------------------
def test_image_handler_serves_through_the_device_path(tmp_path: Path):
    pillow_handler, ctx = tiny_image_handler(tmp_path / "pillow", {})
    device_handler, device_ctx = tiny_image_handler(tmp_path / "device", {"decode": {"on_device": "always",
                                                                                     "threads": 2}})
    try:
        assert getattr(device_handler, "device_images", None) is not None
        bodies = [sample_image(), b"junk", png_bytes((64, 48)), encoded(noise(70, 53, seed=1))]
        want, want_status = run(pillow_handler, ctx, bodies)
        got, status = run(device_handler, device_ctx, bodies)
        assert status == want_status == [200, 400, 200, 200]
        assert got[1] == want[1]  # the same 400 body
        for g, w in zip(got[:1] + got[2:], want[:1] + want[2:]):
            assert list(g) == list(w) and all(abs(g[k] - w[k]) < 1e-3 for k in w)  # same labels, one 8-bit step
    finally:
        device_handler.decode_pool.close()


# ---- on a GPU ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_device_path_matches_pillow(handler, pool):
    handler, _ = handler
    options = handler.settings.options
    bodies = bodies_of_every_kind()
    out = DeviceImages(options, torch.device("cuda")).decode_all(bodies, handler.decode, pool)
    pillow = handler.decode_all(bodies)
    for got, want in zip(out, pillow):
        if isinstance(want, Failure):
            assert isinstance(got, Failure)
            continue
        assert got.device.type == "cuda"
        # CUDA's antialiased bilinear weights may round differently from the CPU's: two steps.
        assert (unnormalised(got, options) - unnormalised(want, options)).abs().max().item() <= 2 * STEP


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_nvjpeg_on_cuda_is_close_to_pillow(handler, pool):
    handler, _ = handler
    decoder, why = Nvjpeg.load(torch.device("cuda"))
    if decoder is None:
        pytest.skip(why)
    options = handler.settings.options
    bodies = [sample_image(), encoded(noise(48, 64, seed=7), "JPEG", quality=95)]
    out = DeviceImages(options, torch.device("cuda"), decoder).decode_all(bodies, handler.decode, pool)
    for got, want in zip(out, handler.decode_all(bodies)):
        difference = (unnormalised(got, options) - unnormalised(want, options)).abs()
        # Another IDCT and full-scale decode (Pillow may use a JPEG draft): a few steps, rarely more.
        assert difference.mean().item() <= 3 * STEP and difference.max().item() <= 0.1


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_image_handler_on_cuda_resizes_on_the_gpu_and_applies_the_gpu_chain(tmp_path: Path):
    from tests.conftest import RequestContext, write_model_dir
    from tests.handler_fixtures import TINY_CNN
    from torchserve_perf.handlers.image_handler import ImageClassifierHandler

    model_file = tmp_path / "tiny_cnn.py"
    model_file.write_text(TINY_CNN)
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.conv = torch.nn.Conv2d(3, 4, 3)
    manifest = write_model_dir(tmp_path / "model", model_file, model,
                               extra={"index_to_name.json": {"0": "zero", "1": "one", "2": "two", "3": "three"}})
    ctx = RequestContext(tmp_path / "model", manifest, {"handler": {"image": {"resize": 40, "crop": 32, "topk": 2}}})
    ctx.context.system_properties["gpu_id"] = 0
    handler = ImageClassifierHandler()
    handler.initialize(ctx.context)
    assert handler.device.type == "cuda" and handler.device_images is not None
    assert handler.optimization.applied == ["channels_last", "fp16", "cuda_graphs"], handler.optimization.skipped
    outputs, statuses = run(handler, ctx, [sample_image(), b"junk", png_bytes((64, 48))])
    assert statuses == [200, 400, 200] and len(outputs[0]) == 2


# ---- the Pillow path's own shortcuts (handlers/imaging.py) ----------------------------------------
@pytest.mark.parametrize("size, mode", [((640, 480), "RGB"), ((333, 517), "RGB"), ((1200, 300), "RGB"),
                                        ((640, 480), "L"), ((300, 300), "RGB")])
def test_resizing_only_the_crops_source_box_matches_resize_then_crop(size, mode):
    """resize_crop_pixels resizes the crop's source region straight to crop x crop: at most one 8-bit
    level from resizing the whole image and cropping (identical almost everywhere at 640x480; about
    a fifth of the values move a level when the two axes' scales differ, as at 333x517)."""
    from torchserve_perf.handlers import imaging

    options = ImageOptions()
    image = Image.fromarray(noise(size[1], size[0], seed=size[0]))
    image = image.convert(mode) if mode != "RGB" else image
    target = imaging.target_for(image.size, options)
    left, top = (target[0] - options.crop) // 2, (target[1] - options.crop) // 2
    whole = np.asarray(imaging.to_rgb(image).resize(target, Image.BILINEAR, reducing_gap=imaging.REDUCING_GAP)
                       .crop((left, top, left + options.crop, top + options.crop))).astype(int)
    boxed = imaging.resize_crop_pixels(image, target, options.crop)
    assert boxed.dtype == np.uint8 and boxed.shape == (options.crop, options.crop, 3)
    difference = np.abs(boxed.astype(int) - whole)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.25


def test_the_normalising_table_gives_the_arithmetic_paths_values_exactly():
    from torchserve_perf.handlers import imaging

    options = ImageOptions()
    normalise = imaging.Normaliser(options.mean, options.std)
    pixels = np.random.default_rng(0).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    mean, std = torch.tensor(options.mean).view(3, 1, 1), torch.tensor(options.std).view(3, 1, 1)
    arithmetic = ((torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1) - mean) / std).unsqueeze(0)
    table = normalise(pixels)
    assert table.shape == (1, 3, 37, 23) and table.dtype == torch.float32
    assert torch.equal(table, arithmetic)
    floats = pixels.astype(np.float32) / 255.0  # 16-bit and float images arrive as [0, 1] floats
    assert torch.equal(normalise(floats), arithmetic)

