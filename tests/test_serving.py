"""Serving on Triton: the model repository (Triton's own config schema), the preprocessing model against the
evaluation transform, and a real tritonserver (the one nvidia-pytriton bundles) on 127.0.0.1 answering the
project's client over HTTP and gRPC with exactly the accuracy ONNX Runtime gives."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from swin_trt.config import get_config
from swin_trt.contract import Preprocessing, read_onnx_contract
from swin_trt.data.transforms import build_transform
from swin_trt.errors import UserError
from swin_trt.serving.client import ServedClassifier, repository_status
from swin_trt.serving.python_backend.image_preprocessing import preprocess_image
from swin_trt.serving.server import LocalTritonServer, free_port
from swin_trt.trt.metadata import metadata_path

from conftest import MICRO_CFG, TINY_CFG, command, run_cmd, run_in_process
from test_user_errors import one_sentence

NAME = "swin_micro_digits"
MISSING_BACKEND = "unable to find backend library for backend '{}'"


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("cfg", [TINY_CFG, MICRO_CFG], ids=["crop_224", "resize_32"])
def test_served_preprocessing_gives_the_evaluation_transform_s_tensor_bit_for_bit(cfg):
    config = get_config(cfg)
    contract = Preprocessing.from_config(config)
    transform = build_transform(config, is_train=False)
    rng = np.random.default_rng(0)
    for (width, height), mode, fmt in [((300, 200), "RGB", "JPEG"), ((199, 257), "RGB", "PNG"), ((32, 32), "L", "PNG"),
                                       ((257, 256), "RGBA", "PNG"), ((640, 427), "RGB", "JPEG")]:
        pixels = rng.integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
        data = encoded(Image.fromarray(pixels.squeeze()), fmt)
        expected = transform(Image.open(io.BytesIO(data)).convert("RGB")).numpy()
        served = preprocess_image(data, contract.input_size[1], contract.crop_pct, contract.interpolation,
                                  contract.mean, contract.std)
        assert served.dtype == np.float32 and served.shape == expected.shape
        np.testing.assert_array_equal(served, expected, err_msg=f"{width}x{height} {mode} {fmt}")


def test_undecodable_bytes_are_a_value_error_with_the_reason():
    with pytest.raises(ValueError, match="not a decodable image"):
        preprocess_image(b"GIF89a but not really", 32, 1.0, "bicubic", (0.5,) * 3, (0.5,) * 3)


def test_no_server_at_the_url_is_one_sentence_over_both_protocols(digits_dir):
    url = f"127.0.0.1:{free_port()}"
    proc = run_in_process(["trt/eval_triton.py", "--url", url, "--model", NAME, "--data-path", str(digits_dir),
                           "--timeout", "10"])
    one_sentence(proc, f"no Triton server answers at {url} over http")
    with pytest.raises(UserError, match=f"no Triton server answers at {url} over grpc"):
        ServedClassifier(url, "grpc", NAME, timeout=10)


def test_url_with_a_scheme_is_one_sentence():
    with pytest.raises(UserError, match="is not HOST:PORT"):
        ServedClassifier("http://127.0.0.1:8000", "http", NAME)


def test_missing_server_environment_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_SERVER_ENV", str(tmp_path / "nowhere"))
    proc = run_in_process(["trt/serve_triton.py", "--model-repository", str(tmp_path), "--seconds", "1"])
    last = one_sentence(proc, f"no Triton server environment at {tmp_path / 'nowhere'}")
    assert "pip install -r requirements-triton.txt" in last


# --- the repository ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repository(micro_engines, tmp_path_factory):
    """The trained micro model's repository, written by the command from its FP32 ONNX file and FP32 engine, plus
    ``broken_python``: the Python model with a config.pbtxt whose input dims are not the ONNX file's."""
    out = tmp_path_factory.mktemp("triton") / "repository"
    run_cmd(["trt/triton_repository.py", "--onnx-file", str(micro_engines["onnx"]["fp32"]), "--trt-engine",
             str(micro_engines["fp32"]), "--output", str(out), "--max-queue-delay-us", "2000"])
    broken = out / "broken_python"
    shutil.copytree(out / f"{NAME}_python", broken)
    text = (broken / "config.pbtxt").read_text().replace(f'name: "{NAME}_python"', 'name: "broken_python"')
    (broken / "config.pbtxt").write_text(text.replace("dims: 32\n  dims: 32", "dims: 64\n  dims: 64", 1))
    return out


def test_every_config_parses_strictly_with_triton_s_schema(repository):
    configs = sorted(repository.glob("*/config.pbtxt"))
    assert {p.parent.name for p in configs} == {f"{NAME}_{m}" for m in (
        "trt", "onnx", "python", "preprocess", "top5", "trt_ensemble", "onnx_ensemble", "python_ensemble")} | {"broken_python"}
    for path in configs:
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        assert config.name == path.parent.name
        assert (path.parent / "1").is_dir()
    misspelled = (repository / f"{NAME}_trt" / "config.pbtxt").read_text().replace("max_batch_size", "max_batch_sizes")
    with pytest.raises(text_format.ParseError, match="max_batch_sizes"):
        text_format.Parse(misspelled, model_config_pb2.ModelConfig())


def read(repository, model: str):
    return text_format.Parse((repository / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_tensorrt_plan_model_follows_the_engine_sidecar(repository, micro_engines):
    meta = json.loads(open(metadata_path(str(micro_engines["fp32"]))).read())
    config = read(repository, f"{NAME}_trt")
    (in_name, in_type), = meta["inputs"].items()
    (out_name, out_type), = meta["outputs"].items()
    assert config.platform == "tensorrt_plan"
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == \
        [(in_name, "TYPE_FP32", meta["shapes"][in_name]["max"][1:])] and in_type == "FLOAT"
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == \
        [(out_name, "TYPE_FP32", [10])] and out_type == "FLOAT"
    assert config.max_batch_size == meta["profile"]["max"] == 64
    assert list(config.dynamic_batching.preferred_batch_size) == [meta["profile"]["opt"], meta["profile"]["max"]]
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == ["KIND_GPU"]
    assert (repository / f"{NAME}_trt" / "1" / "model.plan").read_bytes() == micro_engines["fp32"].read_bytes()


def test_onnx_models_preprocessing_and_ensembles_are_wired_to_each_other(repository, micro_engines):
    contract = read_onnx_contract(str(micro_engines["onnx"]["fp32"]))
    onnx_model = read(repository, f"{NAME}_onnx")
    assert (onnx_model.platform, onnx_model.backend) == ("onnxruntime_onnx", "onnxruntime")
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(onnx_model.instance_group[0].kind) == "KIND_GPU"
    preprocess = read(repository, f"{NAME}_preprocess")
    assert json.loads(preprocess.parameters["swin_trt.preprocessing"].string_value) == json.loads(json.dumps(contract.as_dict()))
    for classifier in ("trt", "onnx", "python"):
        ensemble = read(repository, f"{NAME}_{classifier}_ensemble")
        assert ensemble.platform == "ensemble"
        steps = [s.model_name for s in ensemble.ensemble_scheduling.step]
        assert steps == [f"{NAME}_preprocess", f"{NAME}_{classifier}", f"{NAME}_top5"]
        assert all((repository / step).is_dir() for step in steps)
        assert [t.name for t in ensemble.input] == ["image"] and [t.name for t in ensemble.output] == ["logits", "top5"]


def test_engine_without_sidecar_is_one_sentence(micro_engines, tmp_path):
    engine = tmp_path / "lonely.engine"
    shutil.copy(micro_engines["fp32"], engine)
    proc = run_in_process(["trt/triton_repository.py", "--onnx-file", str(micro_engines["onnx"]["fp32"]),
                           "--trt-engine", str(engine), "--output", str(tmp_path / "repo")])
    one_sentence(proc, f"engine {engine} has no lonely.engine.json beside it")
    assert not (tmp_path / "repo").exists() and not list(tmp_path.glob(".repo*"))


# --- a real server ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(repository, triton_server_env):
    """The bundled tritonserver on free 127.0.0.1 ports, serving ``repository`` for this module's tests."""
    with LocalTritonServer(str(repository), environment=triton_server_env.root) as running:
        yield running


@pytest.fixture(scope="module")
def onnxrt_metrics(micro_onnx):
    """What trt/eval_onnxrt.py reports for the FP32 file on digits val."""
    out = micro_onnx["fp32"].parent / "onnxrt_fp32.json"
    command("trt/eval_onnxrt.py").main(["--resume", str(micro_onnx["fp32"]), "--data-path", str(micro_onnx["data"]),
                                        "--num-workers", "0", "--output-json", str(out)])
    return json.loads(out.read_text())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("concurrency", [1, 8])
def test_served_ensemble_gives_exactly_onnxruntime_s_accuracy(server, onnxrt_metrics, micro_onnx, tmp_path,
                                                              protocol, concurrency):
    out = tmp_path / "served.json"
    command("trt/eval_triton.py").main(["--url", server.url(protocol), "--protocol", protocol, "--model",
                                        f"{NAME}_python_ensemble", "--data-path", str(micro_onnx["data"]),
                                        "--concurrency", str(concurrency), "--output-json", str(out)])
    metrics = json.loads(out.read_text())
    assert {"acc1", "acc5", "loss", "images", "images_per_s"} <= set(metrics)
    assert metrics["images"] == onnxrt_metrics["images"] == 360
    assert metrics["acc1"] == onnxrt_metrics["acc1"] and metrics["acc5"] == onnxrt_metrics["acc5"]
    assert metrics["loss"] == pytest.approx(onnxrt_metrics["loss"], rel=1e-5)
    assert metrics["inputs"] == "images" and metrics["requests"] == 360


def test_served_classifier_takes_the_loader_s_tensors_and_the_batcher_forms_batches(server, onnxrt_metrics, micro_onnx):
    from swin_trt.serving.evaluate import evaluate_served

    served = ServedClassifier(server.grpc_url, "grpc", f"{NAME}_python")
    config = get_config(MICRO_CFG, DATA__DATA_PATH=str(micro_onnx["data"]))
    metrics = evaluate_served(served, config, batch_size=1, concurrency=8)
    assert metrics["inputs"] == "tensors" and metrics["acc1"] == onnxrt_metrics["acc1"]
    batches = {int(b["batch_size"]) for b in served.statistics()["batch_stats"]}
    assert max(batches) > 1, batches


def test_engine_and_onnxruntime_models_fail_only_for_their_missing_backends(server):
    states = {row["model"]: row for row in repository_status(server.http_url)}
    for model, backend in ((f"{NAME}_trt", "tensorrt"), (f"{NAME}_onnx", "onnxruntime")):
        assert states[model]["state"] == "UNAVAILABLE"
        assert MISSING_BACKEND.format(backend) in states[model]["reason"]
    ready = {m for m, row in states.items() if row["state"] == "READY"}
    assert ready == {f"{NAME}_{m}" for m in ("python", "preprocess", "top5", "python_ensemble")}


def test_model_not_ready_is_one_sentence_with_the_server_s_reason(server, micro_onnx):
    proc = run_in_process(["trt/eval_triton.py", "--url", server.http_url, "--model", f"{NAME}_trt",
                           "--data-path", str(micro_onnx["data"])])
    last = one_sentence(proc, f"model {NAME}_trt at {server.http_url} is not ready (UNAVAILABLE: ")
    assert MISSING_BACKEND.format("tensorrt") in last


def test_model_whose_inputs_differ_from_its_config_does_not_load_and_says_why(server, micro_onnx):
    proc = run_in_process(["trt/eval_triton.py", "--url", server.grpc_url, "--protocol", "grpc", "--model",
                           "broken_python", "--data-path", str(micro_onnx["data"])])
    last = one_sentence(proc, "model broken_python at")
    assert "model.onnx has inputs {'input': [3, 32, 32]} but config.pbtxt declares {'input': [3, 64, 64]}" in last


def test_served_model_for_other_images_than_the_config_is_one_sentence(server):
    served = ServedClassifier(server.http_url, "http", f"{NAME}_python")
    with pytest.raises(UserError, match=r"takes input \[-1, 3, 32, 32\] of FP32 but the config \(swin_tiny"):
        served.check_config(get_config(TINY_CFG))


def test_unknown_model_lists_the_ones_the_server_has(server):
    with pytest.raises(UserError, match=f"has no model nothing_here .*{NAME}_python_ensemble"):
        ServedClassifier(server.http_url, "http", "nothing_here")


def test_requests_of_several_images_give_the_same_accuracy_and_a_batch_above_the_limit_is_refused(
        server, onnxrt_metrics, micro_onnx):
    from swin_trt.serving.evaluate import evaluate_served

    served = ServedClassifier(server.grpc_url, "grpc", f"{NAME}_python_ensemble")
    config = get_config(MICRO_CFG, DATA__DATA_PATH=str(micro_onnx["data"]))
    metrics = evaluate_served(served, config, batch_size=16, concurrency=4)
    assert metrics["requests"] == 23 and metrics["acc1"] == onnxrt_metrics["acc1"]  # 22 of 16 images, one of 8
    with pytest.raises(UserError, match="--batch-size 65 is above max_batch_size 64 of model"):
        evaluate_served(served, config, batch_size=65)
