"""trt/eval_trt.py, data/fast_loader.py, benchmarks/data_pipeline.py, trt/benchmark.py and trt/debug/."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from swin_trt.config import get_config
from swin_trt.data.fast_loader import (GpuPrefetcher, build_fast_eval_loader, build_uint8_loader, decode_rgb,
                                       resize_for_eval, sample_list)
from swin_trt.data.gpu_decode import GpuDecodePrefetcher, build_encoded_loader
from swin_trt.data.resize_matrices import eval_resize_matrices
from swin_trt.errors import UserError
from swin_trt.trt.evaluate import check_engine_config
from swin_trt.trt.metadata import read_metadata

from conftest import MICRO_CFG, TINY_CFG, load_engine_or_skip, run_cmd, run_in_process


def normalise(images: torch.Tensor, config) -> torch.Tensor:
    mean = torch.tensor(config.DATA.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(config.DATA.STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


# --- data pipeline -------------------------------------------------------------------------------------------------

def test_fast_pipeline_matches_the_pil_evaluation_transform_on_a_jpeg(tmp_path):
    from swin_trt.data.transforms import build_transform

    config = get_config(TINY_CFG)
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
    path = tmp_path / "photo.jpg"
    coarse.save(path, "JPEG", quality=90)
    reference = build_transform(config, is_train=False)(Image.open(path).convert("RGB"))
    fast = normalise(resize_for_eval(decode_rgb(str(path)), 224, crop_pct=0.875)[None], config)[0]
    levels = (fast - reference).abs() * torch.tensor(config.DATA.STD).view(3, 1, 1) * 255
    assert fast.shape == reference.shape == (3, 224, 224)
    assert levels.max().item() <= 2.0 and levels.mean().item() < 0.1


def test_fast_loader_gives_the_same_batches_as_the_training_code_loader(digits_dir):
    from swin_trt.data import build_loader

    config = get_config(MICRO_CFG, DATA__DATA_PATH=str(digits_dir))
    fast = GpuPrefetcher(build_fast_eval_loader(config, 64, 0), torch.device("cpu"), config.DATA.MEAN, config.DATA.STD)
    reference = build_loader(config, "val", batch_size=64, shuffle=False, num_workers=0)
    assert len(fast) == len(reference)
    for (x, y), (rx, ry) in zip(fast, reference):
        assert torch.equal(y, ry)
        torch.testing.assert_close(x, rx, atol=1e-5, rtol=0)


def test_gpu_decode_pipeline_gives_the_same_images_up_to_rounding(tmp_path):
    from benchmarks.data_pipeline import IMAGENET_MEAN, IMAGENET_STD, write_jpegs

    write_jpegs(str(tmp_path), 6, workers=1, subsampling=0)  # 4:4:4: nvJPEG and libjpeg-turbo decode it identically
    samples = sample_list(str(tmp_path))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the same code runs on either
    workers = GpuPrefetcher(build_uint8_loader(samples, 224, 4, 0), device, IMAGENET_MEAN, IMAGENET_STD)
    nvjpeg = GpuDecodePrefetcher(build_encoded_loader(samples, 4, 0), device, 224, 0.875, "bicubic", IMAGENET_MEAN,
                                 IMAGENET_STD)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    for (x, y), (gx, gy) in zip(workers, nvjpeg):
        levels = (x - gx).abs() * std * 255  # uint8 resize rounds, the float one does not
        assert torch.equal(y, gy) and x.shape == gx.shape
        assert levels.mean().item() < 0.6 and levels.max().item() <= 4


@pytest.mark.parametrize("height,width,crop,interpolation", [(375, 500, 0.875, "bicubic"), (513, 341, 0.875, "bicubic"),
                                                              (257, 256, 0.875, "bilinear"), (300, 410, 1.0, "bicubic"),
                                                              (375, 500, 0.9, "bicubic")])
def test_resize_matrices_reproduce_torchvision_resize_and_centre_crop(height, width, crop, interpolation):
    from torchvision.transforms.v2 import functional as F

    image = torch.rand(3, height, width, dtype=torch.float64) * 255  # 3, H, W
    rows, cols = eval_resize_matrices(height, width, 224, crop, interpolation)
    mode = {"bicubic": F.InterpolationMode.BICUBIC, "bilinear": F.InterpolationMode.BILINEAR}[interpolation]
    if crop < 1:
        short = {0.875: 256, 0.9: 248}[crop]
        reference = F.center_crop(F.resize(image, [short], interpolation=mode, antialias=True), [224, 224])
    else:
        reference = F.resize(image, [224, 224], interpolation=mode, antialias=True)
    torch.testing.assert_close(rows.double().T @ image @ cols.double(), reference, atol=1e-3, rtol=0)


def test_batch_resizer_pads_without_leaking_padding_into_the_output():
    from swin_trt.data.resize_matrices import BatchResizer

    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((375, 500), (500, 375), (260, 300))]
    batch = BatchResizer(224, 0.875, "bicubic", torch.device("cpu"))(images)  # padded to 500 x 500 inside
    alone = torch.cat([BatchResizer(224, 0.875, "bicubic", torch.device("cpu"))([image]) for image in images])
    assert batch.shape == (3, 3, 224, 224)
    torch.testing.assert_close(batch, alone, atol=1e-3, rtol=0)
    reference = torch.stack([resize_for_eval(image.float(), 224) for image in images]).clamp(0, 255)
    torch.testing.assert_close(batch, reference, atol=1e-2, rtol=0)


@pytest.mark.parametrize("background", [True, False])
def test_gpu_decode_names_an_unreadable_file_from_its_producer_thread(tmp_path, background):
    from benchmarks.data_pipeline import IMAGENET_MEAN, IMAGENET_STD, write_jpegs

    write_jpegs(str(tmp_path), 3, workers=1)
    (tmp_path / "class_00" / "zz_broken.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    batches = GpuDecodePrefetcher(build_encoded_loader(sample_list(str(tmp_path)), 2, 0), torch.device("cpu"), 224,
                                  0.875, "bicubic", IMAGENET_MEAN, IMAGENET_STD, background=background)
    with pytest.raises(UserError, match="zz_broken.JPEG cannot be decoded"):
        for _ in batches:
            pass


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError, match="broken.jpg cannot be decoded"):
        decode_rgb(str(bad))


def test_data_pipeline_benchmark_writes_jpegs_and_reports_images_per_second(tmp_path):
    out = tmp_path / "pipeline.json"
    proc = run_cmd(["benchmarks/data_pipeline.py", "--folder", str(tmp_path / "jpegs"), "--num-files", "16",
                    "--images", "32", "--batch-size", "8", "--workers", "1", "--output-json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["images"] >= 32 and rows[0]["images_per_s"] > 0
    files = sorted((tmp_path / "jpegs").rglob("*.JPEG"))
    assert len(files) == 16
    sizes = {Image.open(f).size for f in files}
    assert all(340 <= min(s) <= 410 and 465 <= max(s) <= 535 for s in sizes)  # about 500x375, both orientations
    assert "images_per_s" in proc.stdout


def test_data_pipeline_benchmark_feeds_a_model_and_times_it_alone(tmp_path):
    out = tmp_path / "pipeline.json"
    run_cmd(["benchmarks/data_pipeline.py", "--folder", str(tmp_path / "jpegs"), "--num-files", "8", "--images", "16",
             "--batch-size", "8", "--workers", "1", "--img-size", "32", "--gpu-decode", "--consumer-cfg", MICRO_CFG,
             "--output-json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row["pipeline"].split(" (")[0] for row in rows] == ["model alone", "fast", "GPU decode", "GPU decode"]
    assert all(row["pipeline"].endswith("+ swin_micro_digits.yaml") and row["images"] >= 16 for row in rows)


# --- eval_trt --------------------------------------------------------------------------------------------------------

def test_engine_built_for_another_input_size_is_refused_before_any_gpu_work(micro_engines):
    meta = read_metadata(str(micro_engines["fp32"]))
    check_engine_config(meta, get_config(MICRO_CFG), "micro.engine")
    with pytest.raises(UserError, match=r"takes input of shape \(N, 3, 32, 32\).*\(N, 3, 224, 224\).*config"):
        check_engine_config(meta, get_config(TINY_CFG), "micro.engine")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_eval_without_a_gpu_ends_with_one_sentence(micro_engines):
    proc = run_cmd(["trt/eval_trt.py", "--eval", "--cfg", MICRO_CFG, "--resume", str(micro_engines["fp32"]),
                    "--data-path", str(micro_engines["data"]), "--batch-size", "64"], check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no CUDA device is visible")


@pytest.mark.parametrize("mode", ["fp32", "fp16", "int8"])
def test_engine_accuracy_matches_onnx_runtime_on_digits(mode, micro_engines, trained_micro, tmp_path):
    from swin_trt.data import build_loader
    from swin_trt.evaluation import evaluate
    from swin_trt.onnx_tools.runtime import OrtPredictor

    load_engine_or_skip(micro_engines[mode])
    out = tmp_path / "eval.json"
    run_cmd(["trt/eval_trt.py", "--eval", "--cfg", MICRO_CFG, "--resume", str(micro_engines[mode]), "--data-path",
             str(micro_engines["data"]), "--batch-size", "100", "--compare-checkpoint", str(trained_micro["checkpoint"]),
             "--output-json", str(out)])
    metrics = json.loads(out.read_text())
    onnx_file = micro_engines["fp16_onnx"] if mode == "fp16" else micro_engines["onnx"][mode]
    config = get_config(MICRO_CFG, DATA__DATA_PATH=str(micro_engines["data"]))
    ort = evaluate(OrtPredictor(str(onnx_file), providers=["CPUExecutionProvider"]),
                   build_loader(config, "val", batch_size=100, num_workers=0))
    assert metrics["images"] == ort["images"]
    assert abs(metrics["acc1"] - ort["acc1"]) <= 0.3
    assert metrics["engine_images_per_s"] > 0 and metrics["top1_agreement"] >= 0.97


# --- benchmark -------------------------------------------------------------------------------------------------------

def test_throughput_table_rows_are_backend_and_precision_with_the_speed_up_against_the_same_backends_fp16():
    from swin_trt.benchmark import parse_assignments
    from swin_trt.benchmark_table import format_csv, format_markdown

    def cells(column, backend, precision, rates, provider=None):
        base = {"column": column, "backend": backend, "precision": precision, "device": "CPU (2 cores)"}
        if provider:
            base["provider"] = provider
        return [dict(base, batch=b, images_per_s=r) for b, r in rates.items()]

    results = (cells("PyTorch eager FP32", "eager", "fp32", {1: 200.0, 64: 500.0})
               + [{"column": "PyTorch eager FP16 (autocast)", "backend": "eager", "precision": "fp16", "batch": None,
                   "note": "not measured", "reason": "CPU autocast FP16 says nothing about a deployment"}]
               + cells("ONNX Runtime (CPU provider) FP16", "ort", "fp16", {1: 1000.0, 64: 800.0}, "CPU")
               + cells("ONNX Runtime (CPU provider) INT8", "ort", "int8", {1: 900.0, 64: 1000.0}, "CPU")
               + cells("TensorRT FP16", "trt", "fp16", {1: 3000.0, 64: 20000.0})
               + cells("TensorRT INT8", "trt", "int8", {1: 2500.0})
               + [{"column": "TensorRT INT8", "backend": "trt", "precision": "int8", "batch": 64, "note": "out of memory"}])
    lines = format_markdown(results, [1, 16, 64]).splitlines()
    assert lines[0] == "| backend, precision | batch 1 | batch 64 | vs FP16 of its backend |", "batch 16: no cell"
    rows = {line.split(" | ")[0][2:]: line for line in lines[2:] if line.startswith("| ")}
    assert list(rows) == ["PyTorch eager FP32", "ONNX Runtime (CPU provider) FP16", "ONNX Runtime (CPU provider) INT8",
                          "TensorRT FP16", "TensorRT INT8"]
    assert rows["ONNX Runtime (CPU provider) INT8"].endswith("| 900 | 1,000 | 1.25× (batch 64) |")
    assert rows["TensorRT INT8"].endswith("| 2,500 | out of memory | 0.83× (batch 1) |"), "ORT rows never divide TensorRT's"
    assert rows["PyTorch eager FP32"].endswith("| 200 | 500 | – |"), "no FP16 row of PyTorch on a CPU"
    assert "- not measured: PyTorch eager FP16 (autocast): CPU autocast FP16 says nothing about a deployment" in lines
    assert "n/a" not in "\n".join(lines)
    assert format_csv(results).splitlines()[0].startswith("column,backend,provider,precision,batch,images_per_s")
    assert parse_assignments(["fp16=a.engine"], "--engine") == {"fp16": "a.engine"}
    with pytest.raises(UserError, match="PRECISION=FILE"):
        parse_assignments(["a.engine"], "--engine")


def test_benchmark_backends_and_rows_follow_what_this_machine_has():
    from swin_trt.benchmark import pipeline_backends, pytorch_skip_reason, row_label

    assert pipeline_backends(cuda_available=False, tensorrt_runtime=False) == ["eager", "ort"]
    assert pipeline_backends(cuda_available=True, tensorrt_runtime=False) == ["eager", "compile", "ort"]
    assert pipeline_backends(cuda_available=True, tensorrt_runtime=True) == ["eager", "compile", "ort", "trt"]
    assert pytorch_skip_reason("fp32", "cpu") is None and pytorch_skip_reason("fp16", "cuda") is None
    assert pytorch_skip_reason("fp16", "cpu") == "CPU autocast FP16 says nothing about a deployment"
    assert "INT8 speed is the Q/DQ graph's" in pytorch_skip_reason("int8", "cuda")
    assert row_label("compile", "fp16") == "torch.compile FP16 (autocast)"
    assert row_label("ort", "int8", "CUDA") == "ONNX Runtime (CUDA provider) INT8"
    assert row_label("ort", "fp32", "CPU") == "ONNX Runtime (CPU provider) FP32"
    assert row_label("trt", "int8") == "TensorRT INT8"


@pytest.mark.parametrize("listed, gpu, expected", [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], True, "CUDAExecutionProvider"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], False, "CPUExecutionProvider"),  # onnxruntime-gpu on a CPU
    (["CPUExecutionProvider"], True, "CPUExecutionProvider")])  # the CPU build on a GPU machine
def test_onnx_runtime_takes_the_cuda_provider_exactly_when_it_is_installed_and_a_gpu_is_visible(
        monkeypatch, listed, gpu, expected):
    import onnxruntime

    from swin_trt.onnx_tools import runtime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: listed)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    first = runtime.default_providers()[0]
    assert (first[0] if isinstance(first, tuple) else first) == expected


def test_benchmark_on_this_machine_measures_what_means_something_here(tmp_path):
    """The micro model (random weights) in PyTorch eager and ONNX Runtime, the ONNX file exported on the fly."""
    from swin_trt.benchmark import ort_runner, run_benchmark
    from swin_trt.onnx_tools.runtime import OrtPredictor

    config = get_config(MICRO_CFG)
    results = run_benchmark(config, ["eager", "ort"], ["fp32", "fp16", "int8"], [2], {}, {}, warmup=0, iters=1,
                            repeats=1, max_seconds=0.1, device="cpu")
    rows = {r["column"]: r for r in results}
    assert rows["PyTorch eager FP32"]["images_per_s"] > 0
    assert rows["PyTorch eager FP16 (autocast)"]["batch"] is None, "not measured on a CPU, and says why"
    assert "PyTorch eager INT8" not in rows, "PyTorch has no INT8 row"
    ort = rows["ONNX Runtime (CPU provider) FP32"]
    assert ort["provider"] == "CPU" and ort["images_per_s"] > 0 and ort["device"].startswith("CPU")
    assert rows["ONNX Runtime (CPU provider) FP16"]["images_per_s"] > 0
    assert rows["ONNX Runtime INT8"]["batch"] is None and "--onnx int8=FILE" in rows["ONNX Runtime INT8"]["reason"]

    # the I/O-bound runner gives the predictor's logits
    from swin_trt.benchmark import export_for_ort
    from swin_trt.models import build_model

    path = export_for_ort(build_model(config).eval(), config, str(tmp_path), "fp32")
    run, provider, device, dtype = ort_runner(path)
    images = torch.randn(3, 3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE)
    assert (provider, device.type, dtype) == ("CPU", "cpu", torch.float32)
    np.testing.assert_array_equal(run(images).numpy(), OrtPredictor(path).run(images.numpy()))


def test_benchmark_command_times_pytorch_and_prints_trtexec_lines(micro_engines, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cmd(["trt/benchmark.py", "--cfg", MICRO_CFG, "--backends", "eager", "--precisions", "fp32",
                    "--batch-sizes", "1", "4", "--warmup", "0", "--iters", "1", "--repeats", "1",
                    "--engine", f"fp16={micro_engines['fp16']}", "--output-json", str(out),
                    "--output-csv", str(tmp_path / "bench.csv"), "--output-md", str(tmp_path / "bench.md")])
    results = json.loads(out.read_text())["results"]
    eager = [r for r in results if r["backend"] == "eager"]
    assert [r["batch"] for r in eager] == [1, 4] and all(r["images_per_s"] > 0 for r in eager)
    if read_metadata(str(micro_engines["fp16"]))["backend"] == "tensorrt_rtx":
        assert f"{micro_engines['fp16']} is a TensorRT-RTX engine; trtexec (full TensorRT) cannot load it" in proc.stdout
    else:
        assert f"trtexec --loadEngine={micro_engines['fp16']} --shapes=input:4x3x32x32" in proc.stdout
    table = (tmp_path / "bench.md").read_text()
    assert "| backend, precision | batch 1 | batch 4 |" in table and "| PyTorch eager FP32 |" in table
    if not torch.cuda.is_available():
        trt_rows = [r for r in results if r["backend"] == "trt"]
        assert len(trt_rows) == 1 and trt_rows[0]["batch"] is None and "no CUDA device" in trt_rows[0]["reason"]
        assert "- not measured: TensorRT FP16: " in table


def test_trtexec_line_leaves_out_the_flags_tensorrt_11_made_default_no_ops():
    from swin_trt.benchmark import trtexec_command

    trt10 = trtexec_command("m.engine", 64, "input", [3, 224, 224], "10.13.0.35")
    assert trt10 == ("trtexec --loadEngine=m.engine --shapes=input:64x3x224x224 --useCudaGraph --noDataTransfers "
                     "--useSpinWait --warmUp=500 --duration=10")
    trt11 = trtexec_command("m.engine", 64, "input", [3, 224, 224], "11.1.0.9")
    assert trt11 == "trtexec --loadEngine=m.engine --shapes=input:64x3x224x224 --warmUp=500 --duration=10"


# --- debug: ONNX Runtime against TensorRT / another graph ------------------------------------------------------------

def test_tolerance_report_names_the_first_tensor_past_the_tolerance():
    from swin_trt.trt.tolerance import tolerance_report

    reference = {"a": np.ones(4), "b": np.full(4, 2.0), "c": np.zeros(3), "out": np.ones(2)}
    candidate = {"a": np.ones(4), "b": np.array([2.0, 2.0, 2.5, 2.0]), "c": np.zeros(4), "out": np.ones(2)}
    report = tolerance_report(reference, candidate, atol=0.1, rtol=0.0, outputs=["out"])
    assert report["compared"] == 4 and report["failed"] == 2
    assert report["first_failure"] == "b" and report["outputs_passed"] is True
    rows = {t["name"]: t for t in report["tensors"]}
    assert rows["b"]["violations"] == 1 and rows["b"]["max_abs"] == pytest.approx(0.5)
    assert "shape" in rows["c"]["note"]


def test_per_layer_comparison_of_fp16_and_fp32_graphs_in_onnx_runtime(micro_engines):
    from swin_trt.trt.compare import compare

    fp32, fp16 = str(micro_engines["onnx"]["fp32"]), str(micro_engines["fp16_onnx"])
    loose = compare(fp32, candidate="ort", candidate_onnx=fp16, per_layer=True, batch_size=2, atol=0.05, rtol=0.05)
    assert loose["compared"] > 50 and loose["outputs_passed"]
    exact = compare(fp32, candidate="ort", candidate_onnx=fp16, per_layer=True, batch_size=2, atol=0.0, rtol=0.0)
    assert exact["failed"] > 0 and exact["first_failure"] is not None and not exact["outputs_passed"]


@pytest.mark.parametrize("per_layer", [False, True], ids=["outputs", "every_tensor"])
def test_onnx_runtime_sessions_of_the_comparison_run_qdq_graphs_as_written(micro_engines, per_layer):
    from swin_trt.onnx_tools.runtime import OrtPredictor
    from swin_trt.trt.compare import onnxrt_runner

    onnx_file = str(micro_engines["onnx"]["int8"])
    key = "session.disable_quant_qdq"
    predictor = OrtPredictor(onnx_file, providers=["CPUExecutionProvider"]).session.get_session_options()
    with onnxrt_runner(onnx_file, per_layer, "reference") as runner:
        options = runner.sess.get_session_options()
        assert options.get_session_config_entry(key) == predictor.get_session_config_entry(key) == "1"
        assert (len(runner.sess.get_outputs()) > 1) is per_layer


def test_tensorrt_runner_for_a_built_engine_is_made_from_polygraphys_own_loaders(micro_engines):
    from polygraphy.backend.trt import TrtRunner

    from swin_trt.trt.compare import trt_runner

    runner = trt_runner(None, str(micro_engines["fp32"]), False, "tensorrt", {})  # imports BytesFromPath
    assert isinstance(runner, TrtRunner)
    user_memory = read_metadata(str(micro_engines["fp32"])).get("require_user_allocation")
    assert runner.allocation_strategy == ("profile" if user_memory else None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_tensorrt_comparison_without_a_gpu_ends_with_one_sentence(micro_engines):
    proc = run_in_process(["trt/debug/compare.py", "--onnx-file", str(micro_engines["onnx"]["fp32"]), "--engine",
                           str(micro_engines["fp32"])])
    assert proc.returncode == 2 and "no CUDA device is visible" in proc.stderr


def test_engine_outputs_match_onnx_runtime_per_polygraphy(micro_engines):
    from swin_trt.trt.compare import compare

    load_engine_or_skip(micro_engines["fp32"])
    report = compare(str(micro_engines["onnx"]["fp32"]), engine_file=str(micro_engines["fp32"]), batch_size=4,
                     atol=1e-2, rtol=1e-2)
    assert report["compared"] == 1 and report["outputs_passed"]
