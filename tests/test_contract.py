"""swin_trt/contract.py: exported files and engines carry their preprocessing; the evaluators check --cfg against it."""
from __future__ import annotations

import json

import onnx
import pytest

from swin_trt.config import get_config
from swin_trt.contract import Preprocessing, read_onnx_contract, resolve_config
from swin_trt.data.transforms import EVAL_CROP_PCT, eval_resize_size
from swin_trt.errors import UserError

from conftest import MICRO_CFG, TINY_CFG, command, run_in_process


def test_contract_of_a_config_round_trips_through_onnx_metadata(tmp_path):
    from swin_trt.contract import write_onnx_contract

    config = get_config(TINY_CFG)
    contract = Preprocessing.from_config(config)
    assert contract.input_size == (3, 224, 224) and contract.crop_pct == EVAL_CROP_PCT == 0.875
    assert contract.mean == (0.485, 0.456, 0.406) and contract.interpolation == "bicubic"
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    path = tmp_path / "m.onnx"
    onnx.save(write_onnx_contract(model, contract), str(path))
    assert read_onnx_contract(str(path)) == contract
    assert contract.config(get_config(None)).DATA.IMG_SIZE == 224
    assert Preprocessing.from_config(contract.config(get_config(None))) == contract


def test_one_crop_definition_serves_every_loader():
    from torchvision.transforms import CenterCrop, Resize

    from swin_trt.data.transforms import build_transform

    for size in (224, 384):
        steps = build_transform(get_config(TINY_CFG, ["DATA.IMG_SIZE", str(size)]), is_train=False).transforms
        resize, crop = (s for s in steps if isinstance(s, (Resize, CenterCrop)))
        assert resize.size == eval_resize_size(size, EVAL_CROP_PCT) == {224: 256, 384: 438}[size]  # int(size / 0.875)
        assert crop.size == (size, size)
    # timm's crop_pct 0.9 (its Swin pretrained_cfg): floor(224 / 0.9), as timm.data.create_transform resizes
    timm_steps = build_transform(get_config(TINY_CFG, ["TEST.CROP_PCT", "0.9"]), is_train=False).transforms
    assert next(s for s in timm_steps if isinstance(s, Resize)).size == eval_resize_size(224, 0.9) == 248


def test_a_config_for_other_images_is_one_sentence_naming_the_fields():
    contract = Preprocessing.from_config(get_config(MICRO_CFG))
    with pytest.raises(UserError, match=r"was made for other images than config .*input_size \(3, 32, 32\) vs "
                                        r"\(3, 224, 224\).*mean"):
        resolve_config(TINY_CFG, [], contract, "ONNX file x.onnx")
    with pytest.raises(UserError, match="records no preprocessing.*pass --cfg"):
        resolve_config(None, [], None, "ONNX file x.onnx")


def test_exported_file_and_its_engine_carry_the_contract(micro_onnx, micro_engines):
    expected = Preprocessing.from_config(get_config(MICRO_CFG))
    for precision in ("fp32", "fp16"):
        assert read_onnx_contract(str(micro_onnx[precision])) == expected
    meta = json.loads(open(str(micro_engines["int8"]) + ".json").read())
    assert Preprocessing.from_dict(meta["preprocessing"]) == expected


def test_int8_graph_carries_the_contract(micro_int8_onnx):
    assert read_onnx_contract(str(micro_int8_onnx)) == Preprocessing.from_config(get_config(MICRO_CFG))


def test_eval_onnxrt_takes_the_files_contract_without_cfg(micro_onnx, tmp_path):
    with_cfg, without = tmp_path / "cfg.json", tmp_path / "own.json"
    common = ["--resume", str(micro_onnx["fp32"]), "--data-path", str(micro_onnx["data"])]
    for args in (["--cfg", MICRO_CFG, *common, "--output-json", str(with_cfg)], [*common, "--output-json", str(without)]):
        assert run_in_process(["trt/eval_onnxrt.py", *args]).returncode == 0
    assert json.loads(with_cfg.read_text())["acc1"] == json.loads(without.read_text())["acc1"]
    proc = run_in_process(["trt/eval_onnxrt.py", "--cfg", MICRO_CFG, "--opts", "DATA.MEAN", "[0.485, 0.456, 0.406]",
                           *common])
    assert proc.returncode == 2 and "was made for other images than config" in proc.stderr and "mean" in proc.stderr


def test_eval_trt_and_benchmark_check_cfg_against_the_engines_record(micro_engines):
    eval_trt = command("trt/eval_trt.py")
    engine = str(micro_engines["fp16"])
    with pytest.raises(UserError, match="was made for other images than config"):
        eval_trt.main(["--cfg", MICRO_CFG, "--opts", "TEST.CROP", "True", "--resume", engine,
                       "--data-path", str(micro_engines["data"])])
    with pytest.raises(UserError, match="--compare-checkpoint builds the PyTorch model.*pass --cfg"):
        eval_trt.main(["--resume", engine, "--data-path", str(micro_engines["data"]), "--compare-checkpoint", engine])
    from swin_trt.benchmark import benchmark_config

    config = benchmark_config(None, [], {}, {"fp16": engine})
    assert config.DATA.IMG_SIZE == 32 and config.MODEL.NUM_CLASSES == 10
    with pytest.raises(UserError, match="was made for other images"):
        benchmark_config(TINY_CFG, [], {}, {"fp16": engine})
    with pytest.raises(UserError, match="--backends eager run the PyTorch model.*pass --cfg"):
        benchmark_config(None, [], {}, {"fp16": engine}, {"eager"})
