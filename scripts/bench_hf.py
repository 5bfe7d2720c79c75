#!/usr/bin/env python3
"""Transformers text classification: ours against TorchServe's example approach, in one run.

Three parts, all offline (seeded BERTs and a WordPiece tokenizer trained on the shipped corpus):

* in process (batches of 4, one thread, a fixed mix of 8 to 128 tokens): per-request time of the
  example's padding to 128, padding to the batch's longest, length groups, and dynamic int8;
* accuracy: a small BERT trained briefly on the corpus, held-out accuracy in fp32 and in each
  lossy path, and its label agreement with fp32;
* served: one TorchServe with ours (archive --hf-model, defaults; with and without --samples, so
  auto may keep gated int8) and the example's approach (torchserve_perf/fixtures/
  stock_transformers_handler.py: eager fp32, each request padded to 128), the same workers and
  batching, closed loops at 1, 4 and 8 clients; throughput, p50/p99, worker memory, auto's choice.

    .venv/bin/python scripts/bench_hf.py --quick        # checks it works (about two minutes)
    .venv/bin/python scripts/bench_hf.py --size base    # BERT-base shapes (slow on two cores)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from torchserve_perf.handlers.hf_model import load_transformers
from torchserve_perf.handlers.text_batching import length_groups, padded_length
from torchserve_perf.models.small_bert import (
    SmallBertConfig,
    read_corpus,
    split_corpus,
    write_small_bert,
)
from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.archive import ArchivePlan, ModelSource, create_archive
from torchserve_perf.tools.archive.hf import hf_model_config, hf_plan, read_folder, samples_file
from torchserve_perf.tools.loadgen import HttpSender, Payload, closed_loop

SIZES = {"mini": SmallBertConfig(hidden=256, layers=4, heads=4, intermediate=1024, vocab_size=2000),
         "base": SmallBertConfig(hidden=768, layers=12, heads=12, intermediate=3072, vocab_size=2000)}
LENGTHS = (8, 16, 24, 32, 48, 64, 96, 128)  # the token mix, in a seeded order
FRONTEND = {"batchSize": 4, "maxBatchDelay": 5, "responseTimeout": 300}


def text_mix(tokenizer: Any, count: int, seed: int = 1) -> list[str]:
    """``count`` texts whose token counts cycle through LENGTHS, words drawn from the corpus."""
    words = " ".join(s for _, s in read_corpus()).split()
    rng = random.Random(seed)  # noqa: S311 -- a reproducible mix, not a secret
    lengths = [LENGTHS[i % len(LENGTHS)] for i in range(count)]
    rng.shuffle(lengths)
    texts = []
    for target in lengths:
        start = rng.randrange(len(words) - 200)
        take = target
        while len(tokenizer(" ".join(words[start:start + take]))["input_ids"]) > target and take > 1:
            take -= 1
        texts.append(" ".join(words[start:start + take]))
    return texts


def per_request_ms(run: Callable[[list[torch.Tensor]], None], batches: list[list[torch.Tensor]], rounds: int) -> float:
    run(batches[0])
    started = time.perf_counter()
    for _ in range(rounds):
        for batch in batches:
            run(batch)
    return 1000 * (time.perf_counter() - started) / (rounds * sum(len(b) for b in batches))


def padded(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    out = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :min(length, row.shape[0])] = row[:length]
    return out


def in_process(folder: Path, texts: list[str], rounds: int) -> dict[str, float]:
    torch.set_num_threads(1)
    model = load_transformers(str(folder), torch.device("cpu"))
    int8 = torch.ao.quantization.quantize_dynamic(model.module, {torch.nn.Linear}, dtype=torch.qint8)
    rows = [torch.tensor(model.tokenizer(t, truncation=True, max_length=128)["input_ids"]) for t in texts]
    batches = [rows[i:i + 4] for i in range(0, len(rows), 4)]

    def longest(net: Any) -> Callable[[list[torch.Tensor]], None]:
        return lambda b: net(padded(b, padded_length(max(r.shape[0] for r in b), 8, 128)))

    def grouped(net: Any) -> Callable[[list[torch.Tensor]], None]:
        def run(b: list[torch.Tensor]) -> None:
            for group in length_groups([r.shape[0] for r in b], 8, 128, 64):
                part = [b[i] for i in group]
                net(padded(part, padded_length(max(r.shape[0] for r in part), 8, 128)))
        return run

    paths_ = {"padded to 128 (the example)": lambda b: model.module(padded(b, 128)),
              "padded to the batch's longest": longest(model.module),
              "length groups": grouped(model.module),
              "int8 dynamic, padded to the longest": longest(int8),
              "int8 dynamic, length groups": grouped(int8)}
    with torch.inference_mode():
        return {name: per_request_ms(run, batches, rounds) for name, run in paths_.items()}


def benchmark_agreement(folder: Path, texts: list[str]) -> dict[str, float]:
    """Top-1 agreement with fp32 eager of dynamic int8 on the benchmark's own requests, each run alone
    (unpadded); and how far apart fp32's two best scores are: seeded weights give near-uniform
    logits, so there a tiny change flips a label (the trained model's figures are in accuracy())."""
    model = load_transformers(str(folder), torch.device("cpu"))
    int8 = torch.ao.quantization.quantize_dynamic(model.module, {torch.nn.Linear}, dtype=torch.qint8)
    same, gaps = 0, []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([model.tokenizer(text, truncation=True, max_length=128)["input_ids"]])
            reference = model.module(ids).float()[0]
            same += int(int8(ids).float()[0].argmax() == reference.argmax())
            best = reference.softmax(0).topk(2).values
            gaps.append(float(best[0] - best[1]))
    gaps.sort()
    return {"requests": float(len(texts)), "int8_dynamic agreement with fp32": same / len(texts),
            "fp32 median gap between the two best probabilities": gaps[len(gaps) // 2]}


def accuracy(tmp: Path) -> dict[str, float]:
    folder = write_small_bert(tmp / "trained", SmallBertConfig(), trained=True)
    model = load_transformers(str(folder), torch.device("cpu"))
    _, held = split_corpus(read_corpus())
    ids = model.tokenizer([s for _, s in held], padding=True, return_tensors="pt")["input_ids"]
    truth = torch.tensor([{v: k for k, v in model.labels.items()}[label] for label, _ in held])
    paths_ = {"fp32": model.module,
              "int8_dynamic": torch.ao.quantization.quantize_dynamic(model.module, {torch.nn.Linear}, dtype=torch.qint8)}
    results: dict[str, float] = {"held_out": float(len(held))}
    with torch.inference_mode():
        reference = model.module(ids).argmax(1)
        for name, net in paths_.items():
            predicted = net(ids).argmax(1)
            results[f"{name} accuracy"] = float((predicted == truth).float().mean())
            results[f"{name} agreement with fp32"] = float((predicted == reference).float().mean())
        if torch.backends.mkldnn.is_available():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                predicted = model.module(ids).float().argmax(1)
            results["bf16 accuracy"] = float((predicted == truth).float().mean())
            results["bf16 agreement with fp32"] = float((predicted == reference).float().mean())
    return results


def archives(folder: Path, store: Path, samples: Path, workers: int) -> dict[str, str]:
    base = {"minWorkers": workers, "maxWorkers": workers, **FRONTEND}
    from torchserve_perf.plugins.host_defaults import auto_optimizations

    ours = {**base, "handler": {"optimizations": auto_optimizations()}}
    hf = read_folder(folder)
    plans = {
        "ours_gated": hf_plan("ours_gated", folder, store, hf_model_config(hf, folder, ours, gated=True),
                              samples=samples_file(folder, samples, 0), force=True),
        "ours_lossless": hf_plan("ours_lossless", folder, store, hf_model_config(hf, folder, ours), force=True),
        "example": ArchivePlan(name="example", source=ModelSource("hf", hf.weights),
                               handler=paths.fixtures_dir() / "stock_transformers_handler.py", export_path=store,
                               model_config={**base, "handler": {"max_length": 128}}, extra_files=hf.others,
                               bundle=False, force=True),
    }
    for plan in plans.values():
        create_archive(plan)
    return {name: f"{name}={name}.mar" for name in plans}


def worker_memory_mb(server: serving.TorchServe, model: str) -> float:
    import psutil

    workers = server.manage("GET", f"models/{model}").json()[0]["workers"]
    return sum(psutil.Process(int(w["pid"])).memory_info().rss for w in workers if w.get("pid")) / 2**20


def served(folder: Path, texts: list[str], tmp: Path, clients: list[int], seconds: float, workers: int) -> dict:
    store = tmp / "store"
    samples = tmp / "samples.txt"
    _, held = split_corpus(read_corpus(), seed=7)
    samples.write_text("\n".join(s for _, s in held))  # gate samples: not the benchmark's requests
    models = archives(folder, store, samples, workers)
    server = serving.start(store, tmp / "server", models=list(models.values()), ready_models=list(models),
                           properties={"enable_model_api": "true"}, timeout=600)
    results: dict[str, Any] = {}
    try:
        payloads = [Payload(t.encode(), "text/plain", "text") for t in texts]
        token = server.key()
        senders = {name: HttpSender(f"{server.inference_url}/predictions/{name}", payloads, token=token, timeout=300)
                   for name in models}
        runs: dict[str, dict[int, dict[str, float]]] = {name: {} for name in models}
        for c in clients:  # the models in turns at each load, so a burst from elsewhere hits them alike
            for name, sender in senders.items():
                result = closed_loop(sender, c, duration=seconds, warmup=4)
                runs[name][c] = {"rps": result.throughput, "p50_ms": 1000 * result.pct(50),
                                 "p99_ms": 1000 * result.pct(99), "errors": result.error_count}
                print(f"  {name} c={c}: {result.throughput:.1f} req/s, p50 {1000 * result.pct(50):.0f} ms, "
                      f"p99 {1000 * result.pct(99):.0f} ms, errors {result.error_count}", flush=True)
        log = server.read_log()
        for name in models:
            chosen = re.findall(rf"optimizations for \S*{name}\S*: applied ([^;]*)", log)
            results[name] = {"runs": runs[name], "worker_mb": worker_memory_mb(server, name),
                             "optimizations": chosen[-1] if chosen else "(not logged)"}
    finally:
        server.stop()
    return results


def report(out: dict) -> str:
    lines = ["# Transformers text: ours against the example's approach", "",
             f"Model: {out['size']} BERT shapes, seeded; {out['host']}. Numbers as measured on a shared host: noisy.", "",
             "## In process (batches of 4, one thread), ms per request", "", "| path | ms | vs the example |",
             "|---|---:|---:|"]
    base = out["in_process"]["padded to 128 (the example)"]
    lines += [f"| {k} | {v:.2f} | {base / v:.2f}x |" for k, v in out["in_process"].items()]
    lines += ["", "## Accuracy (small BERT trained on the corpus, held out)", ""]
    lines += [f"- {k}: {v:.4f}" if "held_out" not in k else f"- held-out sentences: {int(v)}"
              for k, v in out["accuracy"].items()]
    if out.get("benchmark_agreement"):
        lines += ["", f"## Agreement on the benchmark's requests ({out['size']} BERT, seeded weights)", ""]
        lines += [f"- {k}: {v:.4f}" if k != "requests" else f"- requests: {int(v)}"
                  for k, v in out["benchmark_agreement"].items()]
    if out.get("served"):
        lines += ["", "## Served (closed loop)", "", "| model | clients | req/s | vs example | p50 ms | p99 ms | errors |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        example = out["served"]["example"]["runs"]
        for name, data in out["served"].items():
            for c, run in data["runs"].items():
                ratio = run["rps"] / example[c]["rps"] if example[c]["rps"] else float("nan")
                lines.append(f"| {name} | {c} | {run['rps']:.1f} | {ratio:.2f}x | {run['p50_ms']:.0f} | "
                             f"{run['p99_ms']:.0f} | {run['errors']} |")
        lines += [""] + [f"- {name}: workers {data['worker_mb']:.0f} MB RSS; optimizations: {data['optimizations']}"
                         for name, data in out["served"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="mini")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=20.0, help="per served run")
    parser.add_argument("--rounds", type=int, default=5, help="in-process passes over the mix")
    parser.add_argument("--workers", type=int, default=1, help="workers per served model (the same for all)")
    parser.add_argument("--no-serve", action="store_true", help="in process and accuracy only")
    parser.add_argument("--quick", action="store_true", help="short runs: checks the script works")
    parser.add_argument("--out", type=Path, default=Path("results/bench_hf"))
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.clients = 4.0, 1, [1, 4]
    import platform

    out: dict[str, Any] = {"size": args.size, "host": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as tmp_name:
        tmp = Path(tmp_name)
        folder = write_small_bert(tmp / "model", SIZES[args.size])
        texts = text_mix(load_transformers(str(folder), torch.device("cpu")).tokenizer, 32)
        out["in_process"] = in_process(folder, texts, args.rounds)
        print(json.dumps(out["in_process"], indent=1), flush=True)
        out["accuracy"] = accuracy(tmp)
        print(json.dumps(out["accuracy"], indent=1), flush=True)
        out["benchmark_agreement"] = benchmark_agreement(folder, texts)
        print(json.dumps(out["benchmark_agreement"], indent=1), flush=True)
        if not args.no_serve:
            out["served"] = served(folder, texts, tmp, args.clients, args.seconds, args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(out, indent=1))
    (args.out / "report.md").write_text(report(out))
    print(report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
