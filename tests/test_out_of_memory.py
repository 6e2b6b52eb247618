"""Out of GPU memory, anywhere a batch size is given, is one sentence and exit code 2; the benchmark keeps its cells.

A CPU that runs out of RAM is killed by the kernel, not raised, so the tests make the first activation of a large
batch (the patch embedding's output) or the benchmark's input allocation raise what PyTorch raises on a GPU, with
PyTorch's own message; ONNX Runtime's failure is its own RuntimeException with its BFCArena message.
"""
from __future__ import annotations

import json

import pytest
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

from swin_trt.errors import UserError, run_main
from swin_trt.out_of_memory import is_out_of_memory, out_of_memory_error, out_of_memory_guard

from conftest import MICRO_CFG, command

TORCH_MESSAGE = ("CUDA out of memory. Tried to allocate 147.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
                 "77.80 GiB is free. Including non-PyTorch memory, this process has 1.38 GiB memory in use.")
ORT_MESSAGE = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
               "Status Message: bfc_arena.cc:376 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool) "
               "Failed to allocate memory for requested buffer of size 939524096")
SENTENCE = ("out of GPU memory at batch size 64: it asked for 147.00 GiB more and the GPU has 79.19 GiB (77.80 GiB "
            "free): lower --batch-size.")


def large_batches_run_out_of_memory(monkeypatch, above: int = 8) -> None:
    """The patch embedding's output of a batch above ``above`` images is an allocation the GPU cannot make."""
    from swin_trt.models.swin_transformer import PatchEmbed

    forward = PatchEmbed.forward

    def allocate(self, x):
        if x.shape[0] > above:
            raise torch.OutOfMemoryError(TORCH_MESSAGE)
        return forward(self, x)

    monkeypatch.setattr(PatchEmbed, "forward", allocate)


def run_command(path: str, argv, capsys) -> tuple:
    """``run_main`` of a command in this process: (exit code, stderr, stdout)."""
    with pytest.raises(SystemExit) as exited:
        run_main(lambda: command(path).main(argv))
    captured = capsys.readouterr()
    return exited.value.code, captured.err, captured.out


def wrapped_forms(err: BaseException) -> dict:
    """Every way an out-of-memory error reaches a command: raised, chained, kept by torch.compile, re-raised by a
    DataLoader worker."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InductorError
    from torch._utils import ExceptionWrapper

    def chained(as_cause: bool) -> BaseException:
        try:
            try:
                raise err
            except Exception as inner:
                if as_cause:
                    raise ValueError("a library's own error") from inner
                raise ValueError("a library's own error")
        except ValueError as outer:
            return outer

    try:
        raise err
    except Exception:
        worker = ExceptionWrapper(where="in DataLoader worker process 0")
    try:
        worker.reraise()
    except Exception as reraised:
        from_worker = reraised
    return {"raised": err, "cause": chained(True), "context": chained(False),
            "inductor": InductorError(err, None), "dynamo backend": BackendCompilerFailed(lambda: None, err, None),
            "DataLoader worker": from_worker}


CUDA_RUNTIME = torch.AcceleratorError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")
ORT_CUDA = ("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 2: out of memory ; GPU=0 ; hostname=h ; "
            "file=cuda_allocator.cc ; line=47 ; expr=cudaMalloc((void**)&p, size);")


FORMS = ["raised", "cause", "context", "inductor", "dynamo backend", "DataLoader worker"]
ORIGINS = ["torch", "cuda runtime", "cublas", "onnxruntime bfc", "onnxruntime cuda"]


# ONNX Runtime never runs inside a DataLoader worker; every other pair can happen
@pytest.mark.parametrize("origin,form", [(o, f) for o in ORIGINS for f in FORMS
                                         if not (o.startswith("onnxruntime") and f == "DataLoader worker")])
def test_out_of_memory_is_recognised_however_it_arrives(origin, form):
    err = {"torch": torch.OutOfMemoryError(TORCH_MESSAGE), "cuda runtime": CUDA_RUNTIME,
           "cublas": RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
           "onnxruntime bfc": RuntimeException(ORT_MESSAGE), "onnxruntime cuda": RuntimeException(ORT_CUDA)}[origin]
    arrived = wrapped_forms(err)[form]
    assert is_out_of_memory(arrived)
    with pytest.raises(UserError) as caught:
        with out_of_memory_guard(64):
            raise arrived
    sentence = str(caught.value)
    assert sentence.startswith("out of GPU memory at batch size 64: ") and sentence.endswith("lower --batch-size.")
    if origin == "torch":
        assert sentence == SENTENCE  # the sizes come from PyTorch's own message, however deep it was wrapped


def test_torch_and_onnxruntime_out_of_memory_are_recognised_and_nothing_else():
    assert is_out_of_memory(torch.OutOfMemoryError(TORCH_MESSAGE))
    assert is_out_of_memory(RuntimeException(ORT_MESSAGE))
    assert not is_out_of_memory(RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad input shape"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("a library's own error"))
    assert not is_out_of_memory(torch.AcceleratorError("CUDA error: an illegal memory access was encountered"))


def test_the_sentence_names_the_batch_what_was_asked_what_the_gpu_has_and_the_flag():
    assert str(out_of_memory_error(torch.OutOfMemoryError(TORCH_MESSAGE), 64)) == SENTENCE
    ort = str(out_of_memory_error(RuntimeException(ORT_MESSAGE), 256, "--batch-size"))
    assert ort.startswith("out of GPU memory at batch size 256: it asked for 0.88 GiB more and ") and ort.endswith(
        ": lower --batch-size.")


def test_the_guard_turns_only_out_of_memory_into_a_user_error():
    with pytest.raises(UserError, match="at batch size 32: .*lower --batch-size-onnx"):
        with out_of_memory_guard(32, "--batch-size-onnx"):
            raise torch.OutOfMemoryError(TORCH_MESSAGE)
    with pytest.raises(ValueError):
        with out_of_memory_guard(32):
            raise ValueError("a bug keeps its traceback")


def test_main_eval_out_of_memory_is_one_sentence(monkeypatch, capsys, digits_dir, tmp_path):
    large_batches_run_out_of_memory(monkeypatch)
    code, err, _ = run_command("main.py", ["--eval", "--cfg", MICRO_CFG, "--data-path", str(digits_dir), "--batch-size",
                                        "64", "--output", str(tmp_path), "--device", "cpu"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {SENTENCE}"


def test_quantize_out_of_memory_is_one_sentence(monkeypatch, capsys, digits_dir, tmp_path):
    from swin_trt.config import get_config
    from swin_trt.models import build_model
    from swin_trt.training.checkpoints import atomic_torch_save

    checkpoint = tmp_path / "plain.pth"
    atomic_torch_save({"model": build_model(get_config(MICRO_CFG)).state_dict()}, str(checkpoint))
    large_batches_run_out_of_memory(monkeypatch)
    code, err, _ = run_command("swin_quant_flow.py", ["--cfg", MICRO_CFG, "--resume", str(checkpoint), "--data-path",
                                                   str(digits_dir), "--quantize", "--ptq-only", "--batch-size", "64",
                                                   "--output", str(tmp_path), "--device", "cpu"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {SENTENCE}"


def test_export_check_out_of_memory_is_one_sentence(monkeypatch, capsys, digits_dir, tmp_path):
    large_batches_run_out_of_memory(monkeypatch)
    code, err, _ = run_command("export.py", ["--cfg", MICRO_CFG, "--output", str(tmp_path / "m.onnx"), "--data-path",
                                          str(digits_dir), "--batch-size", "64"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {SENTENCE}"
    assert [p.name for p in tmp_path.iterdir()] == []


def test_onnxruntime_evaluation_out_of_memory_is_one_sentence(monkeypatch, capsys, digits_dir, tmp_path):
    from swin_trt.onnx_tools.runtime import OrtPredictor

    onnx_file = tmp_path / "m.onnx"
    command("export.py").main(["--cfg", MICRO_CFG, "--output", str(onnx_file), "--dynamic-batch"])

    def allocate(self, images):
        raise RuntimeException(ORT_MESSAGE)

    monkeypatch.setattr(OrtPredictor, "__call__", allocate)
    code, err, _ = run_command("trt/eval_onnxrt.py", ["--resume", str(onnx_file), "--data-path", str(digits_dir),
                                                   "--batch-size", "48"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: out of GPU memory at batch size 48: it asked for 0.88 GiB more")
    assert last.endswith("lower --batch-size.")


def test_benchmark_keeps_the_measured_cells_and_shows_the_rest_as_one_not_run_cell(monkeypatch, capsys, tmp_path):
    randn = torch.randn

    def allocate(*size, **kwargs):
        shape = size[0] if len(size) == 1 and isinstance(size[0], tuple) else size
        if shape and shape[0] >= 262144:
            raise torch.OutOfMemoryError(TORCH_MESSAGE)
        return randn(*size, **kwargs)

    monkeypatch.setattr(torch, "randn", allocate)
    out = tmp_path / "bench.json"
    code, err, table = run_command("trt/benchmark.py", ["--cfg", MICRO_CFG, "--backends", "eager", "--precisions", "fp32",
                                                 "--batch-sizes", "2", "262144", "4", "--warmup", "0", "--iters", "2",
                                                 "--max-seconds", "1", "--output-json", str(out)], capsys)
    cells = json.loads(out.read_text())["results"]
    assert [c["batch"] for c in cells] == [2, 262144]
    assert cells[0]["images_per_s"] > 0
    assert cells[1]["note"] == "not run: out of GPU memory at batch 262144" and "images_per_s" not in cells[1]
    assert code == 2 and err.strip().splitlines()[-1] == (
        "error: out of GPU memory at batch size 262144: it asked for 147.00 GiB more and the GPU has 79.19 GiB "
        "(77.80 GiB free): lower --batch-sizes.")
    assert "| batch 2 | batch 262144 |" in table and "not run: out of GPU memory at batch 262144" in table


@pytest.mark.parametrize("where", ["first call", "loading"])
def test_benchmark_keeps_its_cells_when_torch_compile_wraps_the_out_of_memory(monkeypatch, capsys, tmp_path, where):
    # torch.compile hands an allocation that fails while it compiles or autotunes back as InductorError; the stand-in
    # raises that where compile would (its first call at the large batch, or while the row loads) and otherwise runs
    # the model as it is (what compile computes: nothing here depends on the speed)
    from torch._inductor.exc import InductorError

    def compile_that_runs_out(model, **kwargs):
        if where == "loading":
            raise InductorError(torch.OutOfMemoryError(TORCH_MESSAGE), None)

        def run(images):
            if images.shape[0] >= 262144:
                raise InductorError(torch.OutOfMemoryError(TORCH_MESSAGE), None)
            return model(images)
        return run

    randn = torch.randn

    def lazy_randn(*size, **kwargs):  # the input is never allocated: the compiled call fails first
        shape = size[0] if len(size) == 1 and isinstance(size[0], tuple) else size
        return randn(1, *shape[1:], **kwargs).expand(*shape) if shape and shape[0] >= 262144 else randn(*size, **kwargs)

    monkeypatch.setattr(torch, "compile", compile_that_runs_out)
    monkeypatch.setattr(torch, "randn", lazy_randn)
    out = tmp_path / "bench.json"
    code, err, _ = run_command("trt/benchmark.py", ["--cfg", MICRO_CFG, "--backends", "compile", "--precisions", "fp32",
                                                 "--batch-sizes", "2", "262144", "--warmup", "0", "--iters", "2",
                                                 "--max-seconds", "1", "--output-json", str(out)], capsys)
    compiled = json.loads(out.read_text())["results"]
    if where == "loading":
        assert [c["batch"] for c in compiled] == [2] and compiled[0]["out_of_memory"]
    else:
        assert compiled[0]["images_per_s"] > 0 and compiled[1]["note"] == "not run: out of GPU memory at batch 262144"
    assert code == 2 and "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "error: out of GPU memory at batch size ")


def test_engine_evaluation_out_of_memory_is_one_sentence(monkeypatch, capsys, micro_engines):
    # the engine's I/O buffers are torch CUDA tensors: their allocation is where a too large batch fails
    from swin_trt.trt import engine

    def allocate(self, *args, **kwargs):
        raise torch.OutOfMemoryError(TORCH_MESSAGE)

    monkeypatch.setattr(engine.TRTEngine, "__init__", allocate)
    code, err, _ = run_command("trt/eval_trt.py", ["--eval", "--resume", str(micro_engines["fp16"]), "--data-path",
                                                str(micro_engines["data"]), "--batch-size", "64"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {SENTENCE}"
