"""Transformers models archived from save_pretrained folders (``archive --hf-model``) and served by a
real TorchServe: the session's ``served`` server, which they join through the management API and
leave at the end. Batch 4 with a delay, so concurrent requests share a batch."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

pytest.importorskip("transformers")

from torchserve_perf.models.small_bert import SmallBertConfig, read_corpus, write_small_bert
from torchserve_perf.tools import serving
from torchserve_perf.tools.archive import main as archive_main

SEQUENCE, TOKEN = "hf_reviews", "hf_items"
MODEL_CONFIG = "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 4\nmaxBatchDelay: 300\nresponseTimeout: 120\n"
TEXT = "Where is my order? The laptop arrived broken and the refund was slow."


def archive(folder: Path, name: str, store: Path, tmp: Path, *extra: str) -> None:
    config = tmp / f"{name}.yaml"
    config.write_text(MODEL_CONFIG)
    code = archive_main(["--name", name, "--hf-model", str(folder), "--export-path", str(store),
                         "--model-config", str(config), "--no-verify", "--force", *extra])
    assert code == 0


@pytest.fixture(scope="module")
def hf_served(tmp_path_factory: pytest.TempPathFactory, torchserve_factory: Callable[..., Any]) -> serving.TorchServe:
    """Its own small TorchServe (the shared one has the model API off): the two folder archives only.
    PYTHONPATH emptied: the workers find our handler only inside each .mar."""
    tmp = tmp_path_factory.mktemp("hf")
    store = tmp / "store"
    sequence = write_small_bert(tmp / "sequence", SmallBertConfig(max_length=64))
    # TorchServe's Transformers example keeps its settings in setup_config.json (before 0.8): read, not copied.
    (sequence / "setup_config.json").write_text(json.dumps({
        "model_name": "bert-base-uncased", "mode": "sequence_classification", "do_lower_case": True,
        "num_labels": "4", "save_mode": "pretrained", "max_length": "32"}))
    samples = tmp / "samples.txt"
    samples.write_text("\n".join(sentence for _, sentence in read_corpus()[:40]))
    archive(sequence, SEQUENCE, store, tmp, "--samples", str(samples), "--optimizations", "int8_dynamic")
    archive(write_small_bert(tmp / "token", SmallBertConfig(task="token", max_length=64)), TOKEN, store, tmp,
            "--optimizations", "none")
    return torchserve_factory(store, models=[f"{m}={m}.mar" for m in (SEQUENCE, TOKEN)],
                              ready_models=[SEQUENCE, TOKEN], env={"PYTHONPATH": ""}, timeout=150)


def post(server: serving.TorchServe, model: str, body: Any = None, json_body: Any = None) -> requests.Response:
    # One connection per call: requests.Session is not shared across threads.
    return requests.post(f"{server.inference_url}/predictions/{model}", data=body, json=json_body,
                         headers=server._headers("inference"), timeout=60)


def test_a_folder_archive_serves_a_batch_with_a_bad_request_and_every_transport_agrees(hf_served):
    v2_body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXT]}]}
    bodies = [dict(body=TEXT.encode()), dict(json_body={"text": TEXT}), dict(body=b"\xff\xfe not text"),
              dict(json_body=v2_body)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda kw: post(hf_served, SEQUENCE, **kw), bodies))
    assert [a.status_code for a in answers] == [200, 200, 400, 200], [a.text for a in answers]
    plain, as_json, bad, v2 = (a.json() for a in answers)
    assert "UTF-8" in bad["error"]["message"]
    assert plain == as_json and len(plain["labels"]) == 3 and plain["truncated"] is False
    outputs = {o["name"]: o["data"] for o in v2["outputs"]}
    assert outputs["labels"] == list(plain["labels"])
    assert outputs["probabilities"] == pytest.approx(list(plain["labels"].values()), abs=1e-6)
    long = hf_served.predict(SEQUENCE, TEXT.encode() * 8).json()
    assert long["truncated"] is True  # max_length 32 from setup_config.json
    log = hf_served.read_log()
    assert "int8_dynamic: accuracy gate passed" in log  # the archive's samples kept int8


def test_token_classification_spans_match_the_tokenizer_offsets(hf_served, tmp_path):
    from transformers import AutoTokenizer

    answer = hf_served.predict(TOKEN, TEXT.encode())
    assert answer.status_code == 200, answer.text
    found = answer.json()
    tokenizer = AutoTokenizer.from_pretrained(write_small_bert(tmp_path / "t", SmallBertConfig(task="token")))
    offsets = [tuple(o) for o in tokenizer(TEXT, return_offsets_mapping=True)["offset_mapping"] if o[0] != o[1]]
    assert found["truncated"] is False
    for entity in found["entities"]:
        assert entity["start"] in {s for s, _ in offsets} and entity["end"] in {e for _, e in offsets}
        assert entity["text"] == TEXT[entity["start"]:entity["end"]]


def test_a_killed_worker_is_restarted_from_the_archive_and_answers_again(hf_served):
    before = hf_served.predict(SEQUENCE, TEXT.encode()).json()
    pid = hf_served.manage("GET", f"models/{SEQUENCE}").json()[0]["workers"][0]["pid"]
    os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        workers = hf_served.manage("GET", f"models/{SEQUENCE}").json()[0]["workers"]
        if workers and workers[0].get("pid") not in (pid, None) and workers[0]["status"] == "READY":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no worker READY again within 90 s: {workers}")
    after = hf_served.predict(SEQUENCE, TEXT.encode())
    assert after.status_code == 200 and after.json() == before
