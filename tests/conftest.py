"""Session fixtures shared by the test modules: the digits dataset and a trained micro model.

Expensive artifacts are made once per test run under pytest's temporary
folder, by the project's own commands (``python make_digits.py``,
``main.py``), so the tests exercise the same path a user does. With several
pytest-xdist workers (``.ci/run`` uses two), the first worker that needs one
builds it and the others wait for it and reuse it (:func:`built_once`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
MICRO_CFG = str(REPO / "configs" / "swin_micro_digits.yaml")
TINY_CFG = str(REPO / "configs" / "swin_tiny_patch4_window7_224.yaml")



# session fixtures that train, export or build (a minute or more between them): a test using one is in the slow tier
SLOW_FIXTURES = {"trained_micro", "micro_onnx", "micro_int8_onnx", "micro_engines", "quant_flow", "tiny_onnx", "folder_pipeline",
                 "tiny_int8_onnx", "resumed_pipeline", "micro_fixed_batch"}


# the order the test files are handed to pytest-xdist's workers (--dist loadfile): the one that builds the shared micro
# chain (digits, trained model, its exports, INT8 graph and engines: about 100 s that other files wait for) first, the
# longest files that need none of it next, so that no worker waits on the lock; then the rest, longest first (their
# seconds from the last measured run, docs/RESULTS.md); files not named here follow in their own order
FIRST_FILES = ("test_trt_eval.py", "test_pipeline_from_folder.py", "test_out_of_memory.py", "test_logs.py",
               "test_quant.py", "test_pipeline.py", "test_swinv2_workflow.py", "test_models_v2.py", "test_export.py",
               "test_original_commands.py", "test_trt_build.py", "test_quant_recipes.py", "test_export_check.py",
               "test_models.py", "test_serving.py", "test_main.py")


def pytest_configure(config) -> None:
    """Under pytest-xdist, each worker (and every command it runs) takes its share of the cores, not all of them; the
    files are scheduled in :data:`FIRST_FILES`' order (xdist would otherwise sort them by their number of tests)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ["OMP_NUM_THREADS"] = threads  # inherited by the commands the tests run
        import torch

        torch.set_num_threads(int(threads))


def pytest_collection_modifyitems(config, items) -> None:
    """Mark ``slow`` every test that uses a slow fixture (``pytest -m "not slow"`` is the fast tier); order the files
    as :data:`FIRST_FILES` says (a stable sort: each file's tests keep their order)."""
    rank = {name: i for i, name in enumerate(FIRST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@contextlib.contextmanager
def built_once(tmp_path_factory, name: str) -> Iterator[Tuple[Path, bool]]:
    """``(folder, build)``: the folder of an artifact many test files need, shared by every xdist worker of this
    run; ``build`` is True for the one caller that must make it (under a file lock the others wait on)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder = root / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        done = folder / ".built"
        if done.exists():
            yield folder, False
            return
        if folder.exists():
            shutil.rmtree(folder)  # a build that failed half-way
        folder.mkdir(parents=True)
        yield folder, True
        done.touch()


def command(path: str):
    """A command script (``main.py``, ``trt/eval_onnxrt.py``...) loaded as a module, to call its ``main(argv)`` in-process."""
    import importlib.util

    name = "command_" + path.replace("/", "_").replace(".py", "")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_in_process(args) -> subprocess.CompletedProcess:
    """``[script, *argv]`` run as ``python script argv`` would run it, in this process: ``main(argv)`` under
    :func:`swin_trt.errors.run_main` (a UserError's sentence on stderr, exit code 2), stdout and stderr captured. It
    saves the interpreter's start and imports (seconds a command); anything else raised propagates, failing the test
    as a traceback on the child's stderr would."""
    import io

    from swin_trt.errors import run_main

    script, *argv = [str(a) for a in args]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(lambda: command(script).main(argv))
        except SystemExit as exit_:
            code = exit_.code or 0
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_cmd(args, check: bool = True, timeout: int = 900, env: dict | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a project command with this interpreter from the repo root (or ``cwd``); output captured as text."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run([sys.executable, *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
                          env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The embedded digits dataset written by ``python make_digits.py``."""
    with built_once(tmp_path_factory, "digits") as (folder, build):
        if build:
            run_cmd(["make_digits.py", "--output", str(folder / "digits")])
    return folder / "digits"


@pytest.fixture(scope="session")
def trained_micro(digits_dir, tmp_path_factory) -> dict:
    """The micro model trained by ``main.py`` on the digits data, with its evaluation metrics.

    Returns ``{"checkpoint": Path, "metrics": dict, "output": Path, "data": Path}``.
    """
    with built_once(tmp_path_factory, "trained_micro") as (out, build):
        if build:
            run_cmd(["main.py", "--cfg", MICRO_CFG, "--data-path", str(digits_dir), "--output", str(out),
                     "--output-json", str(out / "metrics.json")])
    metrics = out / "metrics.json"
    ckpt = out / "swin_micro_digits" / "default" / "ckpt_final.pth"
    return {"checkpoint": ckpt, "metrics": json.loads(metrics.read_text()), "output": out, "data": digits_dir}


def small_digits(source: Path, target: Path, train_per_class: int, val_per_class: int) -> Path:
    """A few images per class of the digits dataset, for runs that only need to exercise the code."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for folder in sorted((source / split).iterdir()):
            dest = target / split / folder.name
            dest.mkdir(parents=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copy(image, dest / image.name)
    return target


# --- quantized exports through QAT (issue 24) ------------------------------------------------------------------------

QAT_EPOCHS = 3  # QAT epochs every export is checked after


def exports_through_qat(cfg: str, checkpoint: str, data, fmt: str, out, train_data) -> list:
    """Calibrate ``checkpoint``, export (PTQ), then export again after each of ``QAT_EPOCHS`` QAT epochs (on
    ``train_data``, a few images per class: real QAT steps at the config's learning rate, in seconds); returns each
    export's report. Every export must pass its check (else ExportCheckError); the last is checked on val/ too."""
    import torch

    from swin_trt.config import get_config
    from swin_trt.data import build_loader
    from swin_trt.models import build_model, load_weights
    from swin_trt.quant.calibrate import build_calib_loader, calibrate
    from swin_trt.quant.export import export_quantized
    from swin_trt.quant.finetune import QATFineTuner

    config = get_config(cfg, ["QUANT.FORMAT", fmt, "DATA.DATA_PATH", str(data), "DATA.NUM_WORKERS", "0"])
    torch.manual_seed(0)
    model = build_model(config)
    load_weights(model, checkpoint)
    calibration_images = build_calib_loader(config, config.QUANT.NUM_CALIB_BATCH, config.DATA.BATCH_SIZE)
    calibrate(model, calibration_images, config, torch.device("cpu"))
    val = build_loader(config, "val", shuffle=False, shard=False)
    reports = [export_quantized(model, str(out / f"{fmt}_ptq.onnx"), config, fmt, calibration_images, dynamic_batch=True)]
    train_config = get_config(cfg, ["DATA.DATA_PATH", str(train_data), "DATA.NUM_WORKERS", "0"])
    tuner = QATFineTuner(model, model, build_loader(train_config, "train"), train_config, torch.device("cpu"), 1,
                         QAT_EPOCHS)

    def export_epoch(epoch: int, _) -> None:
        model.eval()
        reports.append(export_quantized(model, str(out / f"{fmt}_qat{epoch + 1}.onnx"), config, fmt, calibration_images,
                                        dynamic_batch=True, val_loader=val if epoch + 1 == QAT_EPOCHS else None))
        model.train()

    tuner.run(0, export_epoch)
    return reports


def assert_all_passed(reports: list) -> None:
    """Each export of :func:`exports_through_qat` passed its check (within its tolerance, every decisive top-1 kept)
    on its 64 calibration images, the last one on the 360 validation images too."""
    assert len(reports) == 1 + QAT_EPOCHS
    for report in reports:
        checked = report["checks"]["calibration"]
        assert checked["images"] == 64 and checked["worst"] <= 1.0 and checked["decisive_agreement"] == 1.0
    val = reports[-1]["checks"]["val"]
    # near ties may flip either way (the check counts only the decisive images); a handful of 360 at most
    assert val["images"] == 360 and val["worst"] <= 1.0 and val["decisive_agreement"] == 1.0
    assert val["top1_agreement"] >= 0.97


# --- ONNX export (issue 3) -------------------------------------------------------------------------------------------

def build_with_trt_rtx(onnx_path) -> bytes:
    """Build ``onnx_path`` into a serialized engine with the TensorRT-RTX builder (CPU-only AOT, strongly typed).

    Goes through trt/build_engine.py with the mode the graph itself asks for (its Q/DQ format, else
    fp16 or fp32); a symbolic batch gets a profile of 1..4. A parser error or failed build fails the test.
    """
    import tempfile

    import onnx

    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")
    from swin_trt.errors import UserError
    from swin_trt.trt.build import build_engine
    from swin_trt.trt.onnx_precision import graph_mode, graph_precision

    precision = graph_precision(onnx.load(str(onnx_path), load_external_data=False))
    profile = {} if precision.batch else {"min_batch": 1, "opt_batch": 2, "max_batch": 4}
    with tempfile.TemporaryDirectory() as tmp:
        engine = os.path.join(tmp, "model.engine")
        try:
            build_engine(str(onnx_path), engine, graph_mode(precision), backend="tensorrt_rtx", **profile)
        except UserError as err:
            pytest.fail(f"TensorRT-RTX could not build {onnx_path}: {err}")
        return Path(engine).read_bytes()


@pytest.fixture(scope="session")
def micro_onnx(trained_micro, tmp_path_factory) -> dict:
    """The trained micro model exported by ``export.py`` in FP32 and FP16 (dynamic batch), checked on digits val.

    Returns ``{"fp32": Path, "fp16": Path, "reports": {precision: export report}, "data": Path}``.
    """
    files, reports = {}, {}
    with built_once(tmp_path_factory, "micro_onnx") as (out, build):
        for precision in ("fp32", "fp16"):
            files[precision] = out / f"swin_micro_digits_{precision}.onnx"
            report = out / f"export_{precision}.json"
            if build:
                run_cmd(["export.py", "--cfg", MICRO_CFG, "--resume", str(trained_micro["checkpoint"]),
                         "--dynamic-batch", "--precision", precision, "--output", str(files[precision]), "--eval",
                         "--data-path", str(trained_micro["data"]), "--output-json", str(report)])
            reports[precision] = json.loads(report.read_text())
    return {**files, "reports": reports, "data": trained_micro["data"]}


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> dict:
    """Swin-T (random weights, 224) exported in-process with dynamic batch, FP32 and FP16, each checked.

    Returns ``{"fp32": Path, "fp16": Path, "reports": {precision: export report}}``.
    """
    import onnx
    import torch

    from swin_trt.config import get_config
    from swin_trt.contract import Preprocessing
    from swin_trt.models import build_model
    from swin_trt.onnx_tools.export import export_checked, save_checked

    with built_once(tmp_path_factory, "tiny_onnx") as (out, build):
        files = {"fp32": out / "swin_tiny.onnx", "fp16": out / "swin_tiny_fp16.onnx"}
        if build:
            torch.manual_seed(0)
            config = get_config(TINY_CFG)
            model = build_model(config).eval()
            shape = Preprocessing.from_config(config)
            reports = {"fp32": export_checked(model, str(files["fp32"]), shape, batch_size=1, dynamic_batch=True,
                                              opset=config.ONNX.OPSET)}
            # the FP16 file from the FP32 graph, as export.py --precision fp16 does, without exporting twice
            reports["fp16"] = save_checked(onnx.load(str(files["fp32"])), str(files["fp16"]), model, shape, "fp16",
                                           config.ONNX.FP16_KEEP_FP32_OPS)
            (out / "reports.json").write_text(json.dumps(reports))
    return {**files, "reports": json.loads((out / "reports.json").read_text())}


# --- TensorRT engines (issue 5) --------------------------------------------------------------------------------------


def trt_runtime_reason() -> str | None:
    """Why TensorRT engines cannot run here (None when they might): no GPU, or no TensorRT-family module."""
    from swin_trt.trt.backend import runtime_unavailable_reason

    return runtime_unavailable_reason()


def load_engine_or_skip(path, **kwargs):
    """``TRTEngine(path)``, skipping the test with the reason when this machine cannot run engines."""
    reason = trt_runtime_reason()
    if reason:
        pytest.skip(reason)
    from swin_trt.errors import UserError
    from swin_trt.trt.engine import TRTEngine

    try:
        return TRTEngine(str(path), **kwargs)
    except UserError as err:  # e.g. TensorRT-RTX on a GPU it does not support
        pytest.skip(f"this machine's TensorRT runtime cannot load the engine: {err}")


@pytest.fixture(scope="session")
def micro_int8_onnx(trained_micro, tmp_path_factory) -> Path:
    """The trained micro model calibrated (max) on 4 training batches and exported by quant/ as INT8 Q/DQ, dynamic batch."""
    import torch

    from swin_trt.config import get_config
    from swin_trt.models import build_model, load_weights
    from swin_trt.quant.calibrate import build_calib_loader, calibrate
    from swin_trt.quant.export import export_quantized

    with built_once(tmp_path_factory, "micro_int8_onnx") as (out, build):
        path = out / "swin_micro_digits_int8.onnx"
        if build:
            config = get_config(MICRO_CFG, DATA__DATA_PATH=str(trained_micro["data"]))
            model = build_model(config)
            load_weights(model, str(trained_micro["checkpoint"]))
            calibration_images = build_calib_loader(config, 4, 32)
            calibrate(model, calibration_images, config, torch.device("cpu"))
            export_quantized(model, str(path), config, "int8", calibration_images, dynamic_batch=True)
    return path


@pytest.fixture(scope="session")
def tiny_int8_onnx(tmp_path_factory) -> Path:
    """Swin-T (random weights) calibrated (max) on 2 random images and exported by quant/ as INT8 Q/DQ, dynamic batch."""
    import torch

    from swin_trt.config import get_config
    from swin_trt.models import build_model
    from swin_trt.quant.calibrate import calibrate
    from swin_trt.quant.export import export_quantized

    with built_once(tmp_path_factory, "tiny_int8_onnx") as (out, build):
        path = out / "swin_tiny_int8.onnx"
        if build:
            config = get_config(TINY_CFG)
            torch.manual_seed(0)
            model = build_model(config)
            images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            calibration_images = [(images, torch.zeros(2, dtype=torch.long))]
            calibrate(model, calibration_images, config, torch.device("cpu"))
            export_quantized(model, str(path), config, "int8", calibration_images, dynamic_batch=True)
    return path


@pytest.fixture(scope="session")
def micro_engines(micro_onnx, micro_int8_onnx, tmp_path_factory) -> dict:
    """FP32, FP16 (converted by trt/build_engine.py from the FP32 graph) and INT8 engines of the trained micro model.

    Built by ``trt/build_engine.py`` (in-process) with the default backend, profile 1..64 (opt 32).
    Returns ``{"fp32": Path, "fp16": Path, "int8": Path, "fp16_onnx": Path, "onnx": {...}, "data": Path}``.
    """
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")
    from swin_trt.trt.build import build_engine

    sources = {"fp32": micro_onnx["fp32"], "fp16": micro_onnx["fp32"], "int8": micro_int8_onnx}
    engines = {}
    with built_once(tmp_path_factory, "micro_engines") as (out, build):
        for mode, onnx_file in sources.items():
            engines[mode] = out / f"swin_micro_digits_{mode}.engine"
            if build:
                build_engine(str(onnx_file), str(engines[mode]), mode, min_batch=1, opt_batch=32, max_batch=64,
                             save_fp16_onnx=str(out / "swin_micro_digits_fp16_converted.onnx") if mode == "fp16" else None)
    return {**engines, "fp16_onnx": out / "swin_micro_digits_fp16_converted.onnx", "onnx": sources,
            "data": micro_onnx["data"]}


@pytest.fixture(scope="session")
def trt_rtx_backend():
    """The TensorRT-RTX module (skips without the wheels): builds and parses on the CPU."""
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX wheels (tensorrt-rtx-cu13-*) not installed")
    from swin_trt.trt.backend import load_backend

    return load_backend("tensorrt_rtx")


# --- Triton Inference Server (issue 19) ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def triton_server_env():
    """The Triton server's own environment (.venv/triton-server, which the README's second command makes, or
    $TRITON_SERVER_ENV); the test fails with how to make it when it is missing or wrong."""
    from swin_trt.errors import UserError
    from swin_trt.serving.server import find_environment

    try:
        return find_environment()
    except UserError as err:
        pytest.fail(str(err))
