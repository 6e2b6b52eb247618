"""The weights users have (issue 28): safetensors files, timm and transformers Hub folders and hf:ORG/NAME, with the
config, preprocessing and class names they carry; the same logits as transformers and timm in PyTorch and in ONNX
Runtime; the same top-1 as the source's own preprocessing; bad inputs in one sentence with nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from swin_trt.config import get_config
from swin_trt.contract import Preprocessing
from swin_trt.errors import UserError
from swin_trt.models import build_model, load_weights
from swin_trt.models.weight_source import resolve, weights_config

from benchmarks.hub_folders import (SMALL_TIMM, decoded, fill_hub_cache, folder_by_prediction, jpegs, listing,
                                    timm_folder, transformers_folder)
from conftest import MICRO_CFG, command, run_cmd

NAMES = ["tabby cat", "Golden Retriever", "sports_car", "tulip", "n04285008"]  # a fine-tuned head's own classes


def ort_logits(path, images: torch.Tensor) -> torch.Tensor:
    from swin_trt.onnx_tools.runtime import OrtPredictor

    return OrtPredictor(str(path), providers=["CPUExecutionProvider"])(images)


def export_folder(folder, out) -> dict:
    """export.py on a model folder, no --cfg: returns the file's contract and the config written beside it."""
    from swin_trt.contract import read_onnx_contract

    command("export.py").main(["--resume", str(folder), "--dynamic-batch", "--output", str(out)])
    return {"contract": read_onnx_contract(str(out)), "config": get_config(str(out.with_suffix(".yaml")))}


@pytest.mark.parametrize("family,names", [("swin", None), ("swin", NAMES), ("swinv2", None), ("swinv2", NAMES)],
                         ids=["v1-1000", "v1-finetuned", "v2-1000", "v2-finetuned"])
def test_a_transformers_folder_gives_transformers_logits_in_pytorch_and_onnx(family, names, tmp_path):
    from transformers import AutoModelForImageClassification

    extra = {"pretrained_window_sizes": [0, 3]} if family == "swinv2" else {}  # V2's 12to24-style table scaling
    folder = transformers_folder(tmp_path / "hf", family, names=names, processor="legacy", **extra)
    theirs = AutoModelForImageClassification.from_pretrained(folder).eval()
    config = weights_config(None, [], str(folder))
    ours = build_model(config)
    load_weights(ours, str(folder))
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(pixel_values=images).logits
        got = ours.eval()(images)
    assert expected.shape == (4, len(names) if names else 1000)
    assert float((got - expected).abs().max()) < 1e-4 < float(expected.std())
    exported = export_folder(folder, tmp_path / "model.onnx")
    assert float((ort_logits(tmp_path / "model.onnx", images) - expected).abs().max()) < 1e-4
    contract = exported["contract"]
    assert contract.labels == tuple(names or ())  # transformers' LABEL_i defaults are no names
    assert (contract.crop_pct, contract.interpolation, contract.input_size) == (1.0, "bicubic", (3, 64, 64))
    assert exported["config"].MODEL.TYPE == family and exported["config"].MODEL.NAME == "hf"


@pytest.mark.parametrize("architecture", ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256"])
def test_a_timm_folder_gives_timm_logits_and_its_pretrained_cfg(architecture, tmp_path):
    import timm

    folder = timm_folder(tmp_path / "timm", architecture, 3, ["a", "b", "c"], **SMALL_TIMM)
    theirs = timm.create_model(architecture, pretrained=False, num_classes=3, **SMALL_TIMM).eval()
    load_weights_timm(theirs, folder)
    config = weights_config(None, [], str(folder))
    assert (config.TEST.CROP, config.TEST.CROP_PCT) == (True, 0.9)  # timm's Swin crop_pct, not the original's 0.875
    ours = build_model(config)
    load_weights(ours, str(folder))
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs(images)
        assert float((ours.eval()(images) - expected).abs().max()) < 1e-4
    exported = export_folder(folder, tmp_path / "model.onnx")
    assert float((ort_logits(tmp_path / "model.onnx", images) - expected).abs().max()) < 1e-4
    assert exported["contract"].labels == ("a", "b", "c") and exported["contract"].crop_pct == 0.9


def test_a_safetensors_file_in_every_accepted_layout_loads_with_its_cfg(tmp_path):
    from safetensors.torch import load_file, save_file

    from swin_trt.models.checkpoint import checkpoint_filter

    config = get_config(MICRO_CFG)
    reference = build_model(config).eval()
    timm_layout = {("head.fc." + k[5:] if k.startswith("head.") else k): v for k, v in reference.state_dict().items()}
    timm_layout = {(f"layers.{int(k.split('.')[1]) + 1}.downsample." + k.split(".downsample.")[1]
                    if ".downsample." in k else k): v for k, v in timm_layout.items()}
    assert checkpoint_filter(timm_layout).keys() == reference.state_dict().keys()
    images = torch.randn(2, 3, 32, 32)
    for name, state in (("original", reference.state_dict()), ("timm", timm_layout)):
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        assert resolve(str(path)).kind == "safetensors" and load_file(str(path)).keys() == state.keys()
        model = build_model(config)
        load_weights(model, str(path))
        with torch.no_grad():
            assert torch.equal(model.eval()(images), reference(images))
    with pytest.raises(UserError, match="carries no config: pass --cfg"):
        weights_config(None, [], str(tmp_path / "original.safetensors"))


def test_a_transformers_safetensors_file_loads_with_a_cfg_that_describes_it(tmp_path):
    folder = transformers_folder(tmp_path / "hf", "swin", names=NAMES)
    cfg = tmp_path / "model.yaml"
    from swin_trt.config import save_config

    save_config(weights_config(None, [], str(folder)), str(cfg))
    single = tmp_path / "weights.safetensors"
    single.write_bytes((folder / "model.safetensors").read_bytes())
    model = build_model(get_config(str(cfg)))
    load_weights(model, str(single))


def test_hf_reference_resolves_from_a_cache_filled_offline_and_names_how_to_fetch_a_missing_one(tmp_path):
    from swin_trt.contract import read_onnx_contract

    folder = transformers_folder(tmp_path / "hf", "swinv2", names=NAMES)
    commit = fill_hub_cache(tmp_path / "cache", "acme/swinv2-pets", folder)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "home")}
    for reference in ("hf:acme/swinv2-pets", f"hf:acme/swinv2-pets@{commit}"):
        out = tmp_path / f"{len(reference)}.onnx"
        run_cmd(["export.py", "--resume", reference, "--output", str(out), "--dynamic-batch"], env=env)
        assert list(read_onnx_contract(str(out)).labels) == NAMES
    proc = run_cmd(["export.py", "--resume", "hf:acme/other", "--output", str(tmp_path / "x.onnx")], env=env,
                   check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert last.startswith("error: hf:acme/other is not in the Hugging Face cache") and "`hf download acme/other`" in last
    assert not (tmp_path / "x.onnx").exists()


def test_a_folder_needs_no_yaml_and_a_cfg_that_disagrees_is_named_field_by_field(tmp_path):
    folder = transformers_folder(tmp_path / "hf", "swin", names=NAMES, use_absolute_embeddings=True,
                                 layer_norm_eps=1e-6)
    config = weights_config(None, [], str(folder))
    swin = config.MODEL.SWIN
    assert (swin.EMBED_DIM, list(swin.DEPTHS), list(swin.NUM_HEADS), swin.WINDOW_SIZE, swin.PATCH_SIZE, swin.APE) == \
        (32, [2, 2], [2, 4], 4, 4, True)
    assert (config.DATA.IMG_SIZE, config.MODEL.NUM_CLASSES, config.MODEL.LAYER_NORM_EPS) == (64, 5, 1e-6)
    assert list(config.MODEL.LABEL_NAMES) == NAMES and list(config.DATA.MEAN) == [0.485, 0.456, 0.406]
    with pytest.raises(UserError) as caught:
        weights_config(MICRO_CFG, [], str(folder))
    message = str(caught.value)
    assert message.startswith(f"config {MICRO_CFG} disagrees with {folder} (")
    assert "MODEL.NUM_CLASSES 10 vs 5" in message and "DATA.IMG_SIZE 32 vs 64" in message
    # its own config, written beside an export, is taken back as --cfg without a word
    out = tmp_path / "model.onnx"
    command("export.py").main(["--resume", str(folder), "--output", str(out)])
    again = weights_config(str(out.with_suffix(".yaml")), [], str(folder))
    assert again.MODEL.SWIN == config.MODEL.SWIN and again.MODEL.RESUME == str(folder)
    assert Preprocessing.from_config(again) == Preprocessing.from_config(config)


@pytest.mark.parametrize("source", ["transformers", "timm"])
def test_eval_onnxrt_gives_every_image_the_top1_of_the_source_with_its_own_preprocessing(source, tmp_path):
    files = jpegs(12, seed=3)
    if source == "transformers":
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        folder = transformers_folder(tmp_path / "hf", "swin", names=NAMES)
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        pixels = AutoImageProcessor.from_pretrained(folder)(decoded(files), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            predicted = [NAMES[i] for i in model(pixel_values=pixels).logits.argmax(1).tolist()]
    else:
        import timm
        from timm.data import create_transform, resolve_data_config

        folder = timm_folder(tmp_path / "timm", "swin_tiny_patch4_window7_224", 5, NAMES, **SMALL_TIMM)
        model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5, **SMALL_TIMM)
        load_weights_timm(model, folder)
        # as timm.create_model("hf-hub:...") sets it: the folder's pretrained_cfg
        pretrained_cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
        transform = create_transform(**resolve_data_config(pretrained_cfg=pretrained_cfg))
        with torch.no_grad():
            logits = model.eval()(torch.stack([transform(image) for image in decoded(files)]))
            predicted = [NAMES[i] for i in logits.argmax(1).tolist()]
    counts = folder_by_prediction(tmp_path / "data", files, predicted)
    onnx_file = tmp_path / "model.onnx"
    command("export.py").main(["--resume", str(folder), "--output", str(onnx_file), "--dynamic-batch"])
    metrics = tmp_path / "metrics.json"
    command("trt/eval_onnxrt.py").main(["--resume", str(onnx_file), "--data-path", str(tmp_path / "data"),
                                        "--batch-size", "5", "--num-workers", "0", "--output-json", str(metrics)])
    result = json.loads(metrics.read_text())
    assert result["images"] == 12 and result["acc1"] == 100.0  # every image: the source's own top-1
    assert {row["class"]: row["images"] for row in result["classes"]} == counts  # mapped by name, named per class


def load_weights_timm(model: torch.nn.Module, folder) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(folder / "model.safetensors")))


def test_class_folders_map_by_name_when_all_are_names_else_by_sorted_order(tmp_path):
    from swin_trt.data.image_folder import class_index

    for name in ("tulip", "tabby cat", "sports_car"):
        (tmp_path / "named" / name).mkdir(parents=True)
    assert class_index(str(tmp_path / "named"), NAMES) == {"tulip": 3, "tabby cat": 0, "sports_car": 2}
    for name in ("n01", "n02"):
        (tmp_path / "synsets" / name).mkdir(parents=True)
    assert class_index(str(tmp_path / "synsets"), NAMES) == {"n01": 0, "n02": 1}  # ImageNet's folders, readable names
    (tmp_path / "named" / "tulips").mkdir()
    with pytest.raises(UserError, match="match only some of the model's 5 label names: tulips is not among them"):
        class_index(str(tmp_path / "named"), NAMES)


def _truncate(folder) -> str:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:len(data) // 2])
    return "model.safetensors is truncated"


def _edit_config(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


BAD_FOLDERS = {
    "no config.json": (lambda f: (f / "config.json").unlink(), "has no config.json"),
    "not a Swin": (lambda f: _edit_config(f, model_type="vit"), "holds a transformers 'vit' model, not a Swin"),
    "config against tensors": (lambda f: _edit_config(f, embed_dim=48),
                               "its config.json does not describe its tensors (shape mismatch: "
                               "swin.embeddings.patch_embeddings.projection.weight (32, 3, 4, 4) vs (48, 3, 4, 4)"),
    "truncated safetensors": (_truncate, "model.safetensors is truncated: its header lists"),
    "option not built": (lambda f: _edit_config(f, hidden_act="relu"),
                         "is a Swin with options this toolkit does not build: hidden_act 'relu'"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_a_bad_folder_is_one_sentence_and_nothing_is_written(case, tmp_path):
    folder = transformers_folder(tmp_path / "hf", "swin", names=NAMES)
    damage, phrase = BAD_FOLDERS[case]
    damage(folder)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UserError) as refused:  # export.py's one sentence (run_main prints it, exit 2)
        command("export.py").main(["--resume", str(folder), "--output", str(out / "model.onnx")])
    assert phrase in str(refused.value), str(refused.value)
    assert listing(out) == []


def test_provenance_names_a_hub_source_with_its_revision_and_file_hashes(tmp_path):
    from swin_trt.provenance import format_provenance, weights_record
    from swin_trt.trt.metadata import file_sha256

    folder = transformers_folder(tmp_path / "hf", "swin", names=NAMES)
    record = weights_record(str(folder))
    assert record["kind"] == "transformers" and record["weights"] == [
        {"path": str(folder / "model.safetensors"), "sha256": file_sha256(str(folder / "model.safetensors"))}]
    line = next(row for row in format_provenance({"checkpoint": record}).splitlines() if row.startswith("| checkpoint"))
    assert str(folder) in line and "transformers folder" in line and record["weights"][0]["sha256"] in line


def test_the_triton_repository_carries_the_labels_for_the_classification_extension(tmp_path):
    from swin_trt.serving.model_config import read_config
    from swin_trt.serving.repository import LABELS_FILE, write_repository

    folder = transformers_folder(tmp_path / "hf", "swin", names=NAMES)
    onnx_file = tmp_path / "model.onnx"
    command("export.py").main(["--resume", str(folder), "--output", str(onnx_file), "--dynamic-batch"])
    write_repository(str(onnx_file), str(tmp_path / "repo"), models=["python"])
    for model in ("hf_python", "hf_python_ensemble"):
        config = read_config(str(tmp_path / "repo" / model / "config.pbtxt"))
        assert config.output[0].label_filename == LABELS_FILE
        assert (tmp_path / "repo" / model / LABELS_FILE).read_text().splitlines() == NAMES
    assert not any(o.label_filename for o in read_config(str(tmp_path / "repo" / "hf_top5" / "config.pbtxt")).output)


def test_pixel_preprocessing_of_a_resized_crop_matches_its_contract(tmp_path):
    """The Triton preprocessing and the evaluation loader resize to the same short side for any crop_pct."""
    from swin_trt.data.transforms import eval_resize_size
    from swin_trt.serving.python_backend.image_preprocessing import resized_size

    for crop_pct in (0.875, 0.9, 0.95, 224 / 256, 384 / 438, 1.0):
        assert resized_size(300, 200, 224, crop_pct)[1] == eval_resize_size(224, crop_pct)
    assert np.isclose(eval_resize_size(384, 384 / 438), 438)
