"""Bad input ends with one sentence on stderr and exit code 2: numbers, file kinds, missing packages, worker errors."""
from __future__ import annotations

import shutil
import textwrap

import numpy as np
import pytest
from PIL import Image

from swin_trt.errors import UserError

from conftest import MICRO_CFG, command, run_cmd, run_in_process


def one_sentence(proc, phrase: str) -> str:
    """Assert ``proc`` ended with exit code 2 and a last stderr line ``error: ...phrase...`` and no traceback."""
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert last.startswith("error: ") and phrase in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return last


def test_zero_batch_size_is_one_sentence(trained_micro, tmp_path):
    proc = run_in_process(["main.py", "--eval", "--cfg", MICRO_CFG, "--resume", str(trained_micro["checkpoint"]),
                           "--data-path", str(trained_micro["data"]), "--batch-size", "0", "--output", str(tmp_path)])
    one_sentence(proc, "--batch-size is 0: pass a number of at least 1.")


def test_text_file_as_onnx_file_is_one_sentence(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("export the fp16 model tomorrow\n")
    proc = run_in_process(["trt/build_engine.py", "--onnx-file", str(notes), "--trt-engine", str(tmp_path / "x.engine")])
    one_sentence(proc, f"ONNX file {notes} is not an ONNX model (it is a text file)")
    assert not (tmp_path / "x.engine").exists()


def test_fp16_export_without_lief_names_the_package_and_the_install_command(trained_micro, tmp_path):
    # ModelOpt's ONNX extras installed but for lief: its import fails exactly as "No module named 'lief'"
    script = textwrap.dedent(f"""
        import runpy, sys

        class NoLief:
            def find_spec(self, name, path=None, target=None):
                if name == "lief" or name.startswith("lief."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, NoLief())
        sys.argv = ["export.py", "--cfg", {MICRO_CFG!r}, "--resume", {str(trained_micro["checkpoint"])!r},
                    "--precision", "fp16", "--output", {str(tmp_path / "m_fp16.onnx")!r}]
        runpy.run_path("export.py", run_name="__main__")
    """)
    proc = run_cmd(["-c", script], check=False)
    last = one_sentence(proc, "the Python module 'lief' is not installed")
    assert "pip install -r requirements.txt" in last
    assert not (tmp_path / "m_fp16.onnx").exists()


def test_unreadable_image_in_a_loader_worker_is_one_sentence(digits_dir, trained_micro, tmp_path):
    """A JPEG cut in half passes a header check and fails only when decoded, here in a worker process."""
    data = tmp_path / "digits"
    shutil.copytree(digits_dir / "val", data / "val")
    truncated = data / "val" / "7" / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(truncated, quality=90)
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[:len(whole) // 2])
    proc = run_in_process(["main.py", "--eval", "--cfg", MICRO_CFG, "--resume", str(trained_micro["checkpoint"]),
                           "--data-path", str(data), "--output", str(tmp_path), "--opts", "DATA.NUM_WORKERS", "2"])
    last = one_sentence(proc, f"image {truncated} cannot be read (image file is truncated")
    assert "Caught" not in proc.stderr and "worker" not in last


def test_user_error_from_a_worker_keeps_only_its_sentence():
    from torch.utils.data import DataLoader, Dataset

    from swin_trt.errors import user_message

    class Refuses(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int):
            raise UserError("image x.png cannot be decoded: remove or replace it.")

    with pytest.raises(UserError) as caught:
        next(iter(DataLoader(Refuses(), num_workers=1)))
    assert "Traceback" in str(caught.value), "PyTorch wraps it with the worker's traceback"
    assert user_message(caught.value) == "image x.png cannot be decoded: remove or replace it."


@pytest.mark.parametrize("script,args,phrase", [
    ("main.py", ["--eval", "--opts", "DATA.NUM_WORKERS", "-1"], "config value DATA.NUM_WORKERS is -1"),
    ("main.py", ["--eval", "--resume", "{notes}"], "{notes} are not a PyTorch checkpoint or a safetensors file (it is a text file)"),
    ("main.py", ["--eval", "--data-path", "{tmp}"], "dataset folder {tmp} has no val/ folder"),
    ("export.py", ["--batch-size-onnx", "0"], "--batch-size-onnx is 0"),
    ("export.py", ["--opset", "13"], "--opset is 13: pass a number of at least 17"),
    ("swin_quant_flow.py", ["--resume", "{ckpt}", "--num-calib-batch", "0"], "--num-calib-batch is 0"),
    ("swin_quant_flow.py", ["--resume", "{ckpt}", "--num-finetune-epochs", "-1"], "--num-finetune-epochs is -1"),
    ("trt/eval_onnxrt.py", ["--resume", "{ckpt}"], "ONNX file {ckpt} is not an ONNX model (it is a zip archive"),
    ("trt/eval_trt.py", ["--resume", "{notes}"], "TensorRT engine {notes} is not an engine (it is a text file)"),
    ("trt/eval_trt.py", ["--resume", "{onnx}"], "TensorRT engine {onnx} is an ONNX model, not an engine"),
    ("trt/build_engine.py", ["--onnx-file", "{onnx}", "--builder-optimization-level", "7"],
     "--builder-optimization-level is 7: pass a number between 0 and 5"),
])
def test_every_script_checks_numbers_and_file_kinds_up_front(script, args, phrase, trained_micro, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    onnx_file = tmp_path / "tiny.onnx"
    make_onnx(onnx_file)
    names = {"notes": notes, "ckpt": trained_micro["checkpoint"], "onnx": onnx_file, "tmp": tmp_path}
    argv = [a.format(**names) for a in args]
    if script == "trt/build_engine.py":
        argv += ["--trt-engine", str(tmp_path / "x.engine")]
    else:
        argv = ["--cfg", MICRO_CFG, *argv]
        if "--data-path" not in argv:
            argv += ["--data-path", str(trained_micro["data"])]
        if "--resume" not in argv and script != "export.py":
            argv += ["--resume", str(trained_micro["checkpoint"])]
    main = command(script).main
    with pytest.raises(UserError) as caught:
        main(argv)
    assert phrase.format(**names) in str(caught.value)


def make_onnx(path) -> None:
    """A one-node ONNX model (Identity), enough to be recognised as ONNX."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))


def test_config_file_that_is_not_yaml_is_one_sentence(tmp_path):
    from swin_trt.config import get_config

    listed = tmp_path / "list.yaml"
    listed.write_text("- MODEL\n- DATA\n")
    with pytest.raises(UserError, match="holds a YAML list, not KEY: VALUE pairs"):
        get_config(str(listed))
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"PK\x03\x04\x00\xff\xfe binary")
    with pytest.raises(UserError, match="is not YAML"):
        get_config(str(binary))
