"""The decode pool (plugins/decode_pool.py): sized from the thread budget, parallel, order and
per-request errors kept, inline with one thread; and the image handler served through it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from tests.conftest import png_bytes
from tests.handler_fixtures import run, tiny_image_handler
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.settings import load_settings
from torchserve_perf.plugins.config import HandlerConfigError
from torchserve_perf.plugins.decode_pool import DecodeConfig, DecodePool, Failure, pool_threads


@pytest.mark.parametrize("threads, intra_op, batch_size, expected", [
    ("auto", 1, 8, 1),  # one intra-op thread: inline, no pool
    ("auto", 4, 8, 4),  # the worker's intra-op budget
    ("auto", 16, 4, 4),  # never more threads than a batch holds
    ("auto", 4, 1, 1),  # batchSize 1: nothing to overlap
    (3, 1, 8, 3),  # set by hand
    (8, 4, 2, 2),
    ("auto", 0, 0, 1),
])
def test_pool_threads_table(threads, intra_op, batch_size, expected):
    assert pool_threads(DecodeConfig(threads=threads), intra_op, batch_size) == expected


def test_bodies_decode_side_by_side_in_order_with_failures_in_place():
    pool = DecodePool(2)
    barrier = threading.Barrier(2, timeout=5)  # breaks unless two decodes run at the same time

    def decode(body, idx):
        if body == "bad":
            raise RequestError("bad body", 400)
        if body == "defect":
            raise KeyError("secret request text")
        barrier.wait()
        return (body, idx)

    try:
        results = pool.map(decode, ["a", "bad", "b", "defect"])
    finally:
        pool.close()
    assert results[0] == ("a", 0) and results[2] == ("b", 2)
    assert isinstance(results[1], Failure) and results[1].error.status == 400
    assert isinstance(results[3], Failure) and isinstance(results[3].error, KeyError)


def test_one_thread_decodes_inline_on_the_calling_thread():
    pool = DecodePool(1)
    caller = threading.get_ident()
    assert pool.map(lambda body, idx: threading.get_ident(), [1, 2, 3]) == [caller] * 3
    assert pool.describe() == "decode inline"


def test_decode_section_is_validated_and_read_from_the_environment():
    settings = load_settings({"handler": {"decode": {"threads": 3, "on_device": "always"}}}, {})
    assert settings.decode == DecodeConfig(threads=3, on_device="always")
    assert load_settings({}, {"TS_PERF_DECODE_THREADS": "2"}).decode.threads == 2
    assert load_settings({}, {}).decode == DecodeConfig()
    with pytest.raises(HandlerConfigError, match=r"handler\.decode\.threads: 0 is below 1"):
        load_settings({"handler": {"decode": {"threads": 0}}}, {})
    with pytest.raises(HandlerConfigError, match="did you mean 'threads'"):
        load_settings({"handler": {"decode": {"thread": 2}}}, {})
    with pytest.raises(HandlerConfigError, match="on_device"):
        load_settings({"handler": {"decode": {"on_device": "gpu"}}}, {})


def test_image_batch_through_a_two_thread_pool_matches_inline(image_handler):
    handler, ctx = image_handler
    bodies = [png_bytes((64, 48)), b"not an image", png_bytes((50, 70), (10, 200, 30), fmt="JPEG"),
              {"image": "!!!"}, png_bytes((90, 40), (5, 5, 250))]
    inline, inline_statuses = run(handler, ctx, bodies)
    handler.decode_pool = DecodePool(2)
    try:
        pooled, statuses = run(handler, ctx, bodies)
        tensors = handler.decode_all(bodies)
    finally:
        handler.decode_pool.close()
    assert statuses == inline_statuses == [200, 400, 200, 400, 200]
    assert pooled == inline
    assert isinstance(tensors[1], Failure) and isinstance(tensors[3], Failure)
    assert torch.equal(tensors[0], handler.decode(bodies[0], 0))


@pytest.mark.parametrize("decode, batch_size, expected", [
    ({"threads": 2}, 4, 2), ({"threads": 3}, 2, 2), ({"threads": 1}, 4, 1), ({}, 1, 1)])
def test_handler_sizes_its_pool_at_load(tmp_path: Path, decode, batch_size, expected):
    handler, ctx = tiny_image_handler(tmp_path, {"decode": decode}, batch_size)
    try:
        assert handler.decode_pool.threads == expected
        outputs, statuses = run(handler, ctx, [png_bytes(), b"junk"])
        assert statuses == [200, 400] and len(outputs[0]) == 2
    finally:
        handler.decode_pool.close()
