"""``archive --from``: a stock archive's manifest read and mapped to our handler, in process (no
archiver run, no server). Converted archives served beside stock: tests/integration/test_archive_convert.py."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from tests.archive_fixtures import _error, plain_class
from torchserve_perf.handlers.labels import top_k
from torchserve_perf.handlers.options import ImageOptions
from torchserve_perf.plugins.config import ConfigValueError
from torchserve_perf.tools.archive.convert import (
    STOCK_IMAGE_OPTIONS,
    convert,
    handler_name,
    handler_settings,
    mapped_section,
    plan_from_stock,
    read_stock_archive,
    unpack,
)
from torchserve_perf.tools.archive.plan import ArchiveError


def stock_folder(root: Path, handler: str, *, model_file: Optional[str] = "model.py",
                 serialized: Optional[str] = "model.pth", files: Optional[dict[str, str]] = None,
                 extra_manifest: Optional[dict[str, Any]] = None) -> Path:
    """An unpacked archive as torch-model-archiver lays it out: MAR-INF/MANIFEST.json and the files at the root."""
    (root / "MAR-INF").mkdir(parents=True)
    model: dict[str, Any] = {"modelName": "example", "modelVersion": "2.0", "handler": handler}
    if serialized:
        model["serializedFile"] = serialized
        torch.save(plain_class(root)().state_dict(), root / serialized)
    if model_file:
        model["modelFile"] = model_file
        (root / model_file).write_text((root / "plain.py").read_text())
    model.update(extra_manifest or {})
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    (root / "MAR-INF" / "MANIFEST.json").write_text(json.dumps({"runtime": "python", "model": model}))
    return root


@pytest.mark.parametrize("handler, name", [
    ("image_classifier", "image_classifier"),
    ("ts.torch_handler.image_classifier", "image_classifier"),
    ("image_classifier:handle", "image_classifier"),
    ("Transformer_handler_generalized.py", "Transformer_handler_generalized.py"),
    ("/abs/path/my_handler.py:handle", "my_handler.py"),
])
def test_handler_name(handler: str, name: str) -> None:
    assert handler_name(handler) == name


def test_image_classifier_maps_to_ours_in_stocks_shape(tmp_path: Path) -> None:
    labels = json.dumps({"0": ["n0", "cat"], "1": ["n1", "dog"]})
    root = stock_folder(tmp_path / "a", "image_classifier",
                        files={"index_to_name.json": labels, "helpers.py": "X = 1\n"},
                        extra_manifest={"requirementsFile": "requirements.txt"})
    stock = read_stock_archive(root)
    assert (stock.name, stock.version, stock.others) == ("example", "2.0", ("helpers.py", "index_to_name.json",
                                                                             "plain.py"))
    conversion = convert(stock)
    assert conversion.section == "image" and conversion.options == STOCK_IMAGE_OPTIONS
    assert conversion.source.kind == "eager" and conversion.source.model_file == root / "model.py"
    assert conversion.labels == {"0": ["n0", "cat"], "1": ["n1", "dog"]}
    assert {p.name for p in conversion.extra_files} == {"helpers.py", "plain.py"}
    assert any("requirements.txt" in note for note in conversion.notes)


@pytest.mark.parametrize("handler, files, extra, piece", [
    ("object_detector", {}, {}, "handler object_detector"),
    ("my_handler.py", {"my_handler.py": "x = 1\n"}, {}, "handler my_handler.py"),
    ("text_classifier", {}, {"sourceVocab": "source_vocab.pt"}, "source vocabulary source_vocab.pt"),
])
def test_unmappable_pieces_are_named(tmp_path: Path, handler: str, files: dict, extra: dict, piece: str) -> None:
    root = stock_folder(tmp_path / "a", handler, files=files, extra_manifest=extra)
    with pytest.raises(ArchiveError) as exc:
        convert(read_stock_archive(root))
    assert piece in str(exc.value) and "\n" not in str(exc.value)


def test_text_classifier_maps_to_text(tmp_path: Path) -> None:
    conversion = convert(read_stock_archive(stock_folder(tmp_path / "a", "text_classifier")))
    assert conversion.section == "text" and conversion.options == {}


def test_model_kinds_from_the_serialized_file(tmp_path: Path) -> None:
    root = stock_folder(tmp_path / "a", "image_classifier", model_file=None, serialized="model.pt")
    with pytest.raises(ArchiveError, match="serialized file model.pt: not TorchScript"):
        convert(read_stock_archive(root))
    scripted = torch.jit.script(plain_class(tmp_path)())
    torch.jit.save(scripted, str(root / "model.pt"))
    assert convert(read_stock_archive(root)).source.kind == "torchscript"
    empty = stock_folder(tmp_path / "b", "image_classifier", model_file=None, serialized=None)
    with pytest.raises(ArchiveError, match="no serialized file"):
        convert(read_stock_archive(empty))


def test_unpack_refuses_entries_outside_the_folder(tmp_path: Path) -> None:
    mar = tmp_path / "evil.mar"
    with zipfile.ZipFile(mar, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", "{}")
        archive.writestr("../escape.txt", "x")
    (tmp_path / "into").mkdir()
    with pytest.raises(ArchiveError, match="outside the archive"):
        unpack(mar, tmp_path / "into")
    not_zip = tmp_path / "plain.mar"
    not_zip.write_text("hello")
    with pytest.raises(ArchiveError, match="not a readable .mar"):
        unpack(not_zip, tmp_path / "into")


def test_cli_from_errors_are_one_line(project: Path, capsys: pytest.CaptureFixture) -> None:
    root = stock_folder(project / "stock", "object_detector")
    assert "handler object_detector" in _error(capsys, "--from", str(root))
    with pytest.raises(SystemExit):
        from torchserve_perf.tools import archive

        archive.main(["--from", str(root), "--model-file", "plain.py"])
    assert "--from takes the model from the archive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        archive.main(["--model-file", "plain.py", "--weights", "plain.pt"])
    assert "required: --name" in capsys.readouterr().err


@pytest.mark.parametrize("value, ok", [("stock", True), ("ours", True), ("torchserve", False)])
def test_image_response_option_is_validated(value: str, ok: bool) -> None:
    if ok:
        assert ImageOptions(response=value).response == value  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigValueError, match="response"):
            ImageOptions(response=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("digits, expected", [(6, 0.665241), (None, 0.6652409434318542)])  # float32 softmax
def test_top_k_rounds_unless_stock(digits: Optional[int], expected: float) -> None:
    answer = top_k(torch.tensor([2.0, 1.0, 0.0]), {0: "a", 1: "b"}, 2, digits)
    assert list(answer) == ["a", "b"]
    assert answer["a"] == pytest.approx(expected, abs=1e-12)


EXAMPLE_HANDLER = "Transformer_handler_generalized.py"


@pytest.mark.parametrize("files, extra", [
    ({"setup_config.json": json.dumps({"model_name": "bert-base-uncased", "mode": "sequence_classification",
                                       "max_length": "150"})}, {}),
    ({"model-config.yaml": "minWorkers: 4\nhandler:\n  mode: token_classification\n  max_length: 128\n"},
     {"configFile": "model-config.yaml"}),
])
def test_the_transformers_example_is_recognised(tmp_path: Path, files: dict, extra: dict) -> None:
    root = stock_folder(tmp_path / "a", EXAMPLE_HANDLER, model_file=None, files={EXAMPLE_HANDLER: "", **files},
                        extra_manifest=extra)
    stock = read_stock_archive(root)
    settings = handler_settings(stock)
    assert mapped_section(stock, settings) == "transformers" and "max_length" in settings
    with pytest.raises(ArchiveError, match="Transformers text path"):
        convert(stock)


def test_the_transformers_example_becomes_our_transformers_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """The example's archive (weights, config and tokenizer files, setup_config.json, index_to_name.json
    and its handler) planned with the same task, max_length and labels; nothing is built here."""
    pytest.importorskip("transformers")
    from torchserve_perf.models.small_bert import SmallBertConfig, write_small_bert
    from torchserve_perf.tools.archive.cli import model_config_from_args, parse_args

    root = write_small_bert(tmp_path / "example", SmallBertConfig(task="sequence", max_length=64))
    config = json.loads((root / "config.json").read_text())
    count = len(config["id2label"])
    (root / "MAR-INF").mkdir()
    (root / "MAR-INF" / "MANIFEST.json").write_text(json.dumps({"model": {
        "modelName": "bert_example", "modelVersion": "1.0", "serializedFile": "model.safetensors",
        "handler": EXAMPLE_HANDLER}}))
    (root / EXAMPLE_HANDLER).write_text("# the example's handler\n")
    (root / "setup_config.json").write_text(json.dumps({"model_name": "bert-base-uncased", "mode":
                                                        "sequence_classification", "max_length": "48",
                                                        "num_labels": str(count), "save_mode": "pretrained"}))
    (root / "index_to_name.json").write_text(json.dumps({str(i): f"topic_{i}" for i in range(count)}))
    monkeypatch.chdir(tmp_path)
    plan, section = plan_from_stock(parse_args(["--from", str(root), "--workers", "1"]), model_config_from_args)
    assert section == "transformers" and plan.name == "bert_example" and plan.source.kind == "hf"
    assert plan.model_config["handler"]["transformers"]["max_length"] == 48
    staged = plan.source.serialized_file.parent
    assert json.loads((staged / "config.json").read_text())["id2label"]["1"] == "topic_1"
    assert EXAMPLE_HANDLER not in {p.name for p in plan.extra_files}
    assert "(the Transformers example) -> transformers" in capsys.readouterr().out
