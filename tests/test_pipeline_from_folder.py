"""pipeline.py from a fine-tuned transformers folder, no YAML (issue 28): every step runs to the report, classes
mapped by name and named, the source named in the provenance and the quantized checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from swin_trt.trt.metadata import file_sha256

from conftest import REPO

PETS = ["tabby cat", "golden retriever", "sports car", "tulip", "lighthouse"]


@pytest.fixture(scope="module")
def folder_pipeline(tmp_path_factory) -> dict:
    """pipeline.py --resume <transformers folder> --data-path DATA, no --cfg: a fine-tuned 5-class model
    (transformers' SwinForImageClassification with Swin's four stages, narrower and shallower than Swin-T, on 128-px
    images with 4-token windows) and an image folder named by its classes, in the order of neither."""
    from benchmarks.hub_folders import jpegs, transformers_folder

    root = tmp_path_factory.mktemp("hf_pipeline")
    folder = transformers_folder(root / "swin-t-pets", "swin", names=PETS, image_size=128, embed_dim=32,
                                 depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=4)
    files = jpegs(15, seed=7)
    for i, data in enumerate(files):
        split = "val" if i % 3 == 0 else "train"
        target = root / "data" / split / PETS[::-1][i % 5]
        target.mkdir(parents=True, exist_ok=True)
        (target / f"img{i}.jpg").write_bytes(data)
    weights, results = root / "weights", root / "results"
    command = [sys.executable, "pipeline.py", "--resume", str(folder), "--data-path", str(root / "data"), "--weights",
               str(weights), "--results", str(results), "--batch-size", "4", "--bench-batches", "1",
               "--bench-seconds", "0.1"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1500,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return {"folder": folder, "weights": weights, "results": results, "log": proc.stdout}


def test_a_transformers_folder_runs_the_whole_pipeline_without_a_yaml(folder_pipeline):
    weights, results = folder_pipeline["weights"], folder_pipeline["results"]
    assert (weights / "swin-t-pets.yaml").exists()  # the folder's config, the --cfg of every step
    assert all((weights / f"swin-t-pets_{p}.engine").stat().st_size > 0 for p in ("fp32", "fp16", "int8"))
    assert "mapped to the model's classes by name" in folder_pipeline["log"]
    quant = json.loads((results / "quant_metrics.json").read_text())
    assert {r["stage"] for r in quant["rows"]} >= {"fp32", "ptq", "qat"} and quant["onnx"]["checks"]["structure"]
    report = json.loads((results / "report.json").read_text())
    weights_record = report["provenance"]["checkpoint"]
    assert weights_record["kind"] == "transformers" and weights_record["reference"] == str(folder_pipeline["folder"])
    assert weights_record["weights"][0]["sha256"] == file_sha256(str(folder_pipeline["folder"] / "model.safetensors"))
    pytorch = next(r for r in report["accuracy"] if r["backend"] == "pytorch")
    assert {c["class"] for c in pytorch["classes"]} == set(PETS)
    markdown = (results / "report.md").read_text()
    assert "### Classes" in markdown and "transformers folder" in markdown


def test_the_quantized_checkpoint_records_where_its_weights_came_from(folder_pipeline):
    qat = torch.load(folder_pipeline["weights"] / "swin-t-pets_int8_qat.pth", map_location="cpu", weights_only=True)
    source = qat["quant"]["source"]
    assert source["kind"] == "transformers" and source["reference"] == str(folder_pipeline["folder"])
    assert "reusing the calibration of" in folder_pipeline["log"]  # the sensitivity step took the quantize step's
