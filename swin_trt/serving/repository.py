"""An ONNX classifier (and the engine built from it) -> a Triton model repository.

For a base name ``B`` (the contract's MODEL.NAME unless given) the repository holds, each model in
``<model>/config.pbtxt`` and ``<model>/1/``:

- ``B_trt``: the engine (``platform: "tensorrt_plan"``), its inputs and outputs by name, type and dims from the
  engine's JSON sidecar, ``max_batch_size`` and the dynamic batcher's preferred sizes from its optimisation profile,
  one instance on the GPU;
- ``B_onnx``: the ONNX file for the ``onnxruntime`` backend on the GPU (its CUDA provider): the fallback where no
  engine fits the GPU;
- ``B_python``: the same ONNX file in ONNX Runtime's CPU provider inside the Python backend, for servers that have
  only that backend (the one nvidia-pytriton bundles);
- ``B_preprocess`` (Python backend): encoded JPEG/PNG bytes -> the normalised tensor, as the file's preprocessing
  contract says; ``B_top5`` (Python backend): logits -> the five best class indices;
- ``B_<classifier>_ensemble`` for each classifier: image bytes in, ``logits`` and ``top5`` out.

The repository is written to a temporary folder beside ``output`` and renamed into place when complete.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import onnx

from swin_trt.contract import Preprocessing, onnx_contract, resolve_config
from swin_trt.errors import UserError
from swin_trt.files import require_parent_dir, writing
from swin_trt.serving.model_config import (CONFIG_FILE, ONNX_TYPES, TENSORRT_TYPES, Batching, TensorSpec,
                                           add_instances, base_config, ensemble_config, preferred_sizes,
                                           set_parameters, write_config)
from swin_trt.trt.metadata import metadata_path, read_metadata
from swin_trt.validation import require_engine, require_onnx

_LOG = logging.getLogger("swin")
SOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python_backend")
CLASSIFIERS = ("trt", "onnx", "python")  # suffix of each classifier model, in the order they are written
LABELS_FILE = "labels.txt"  # class names, one a line in logit order, beside a config.pbtxt whose logits name it
IMAGE, PIXELS, LOGITS, TOP5 = "image", "pixels", "logits", "top5"  # the ensembles' tensor names
TOP_K = 5


@dataclasses.dataclass(frozen=True)
class Classifier:
    """One classifier model to write: its I/O, batching and the files of its version folder."""

    suffix: str
    config: Any  # model_config_pb2.ModelConfig
    files: Dict[str, str]  # name in the version folder -> source path
    input: TensorSpec
    output: TensorSpec


def onnx_io(model: onnx.ModelProto, path: str) -> tuple:
    """(input, output) :class:`TensorSpec` of a one-input, one-output classifier with a symbolic batch.

    Raises:
        UserError: more inputs or outputs, a fixed batch, or a type Triton has no name for.
    """
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise UserError(f"ONNX file {path} has {len(inputs)} inputs and {len(model.graph.output)} outputs, not one image "
                        "input and one logits output: pass a classifier exported by export.py.")
    specs = []
    for value in (inputs[0], model.graph.output[0]):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        if not dims or dims[0] != -1:
            raise UserError(f"ONNX file {path} has a fixed batch ({value.name} {dims}) and Triton's batcher sends any "
                            "batch up to max_batch_size: export it with --dynamic-batch.")
        if tensor.elem_type not in ONNX_TYPES:
            raise UserError(f"ONNX file {path}: {value.name} has ONNX element type {tensor.elem_type}, which Triton "
                            "cannot carry: export the classifier with float inputs and outputs.")
        specs.append(TensorSpec(value.name, ONNX_TYPES[tensor.elem_type], tuple(dims[1:])))
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise UserError(f"ONNX file {path} keeps its weights in external files: save it as one file "
                        "(onnx.save with save_as_external_data=False) before making a repository.")
    return specs[0], specs[1]


def engine_io(engine_file: str, meta: Optional[Dict[str, Any]], contract: Preprocessing) -> tuple:
    """(input, output, profile) of an engine, from its JSON sidecar (trt/build_engine.py writes it).

    Raises:
        UserError: no sidecar, a profile that does not start at batch 1, tensors Triton cannot carry, or a
            contract other than the ONNX file's.
    """
    if meta is None:
        raise UserError(f"engine {engine_file} has no {os.path.basename(metadata_path(engine_file))} beside it, so its "
                        "tensor names, types and batch profile are unknown: build it with trt/build_engine.py, which "
                        "writes that file.")
    recorded = meta.get("preprocessing")
    if recorded and Preprocessing.from_dict(recorded) != contract:
        raise UserError(f"engine {engine_file} was built for other images than the ONNX file records ({recorded}): "
                        "pass the ONNX file the engine was built from, or rebuild the engine.")
    if len(meta["inputs"]) != 1 or len(meta["outputs"]) != 1:
        raise UserError(f"engine {engine_file} has {len(meta['inputs'])} inputs and {len(meta['outputs'])} outputs, "
                        "not one image input and one logits output: build it from a classifier exported by export.py.")
    profile = meta["profile"]
    if profile["min"] != 1:
        raise UserError(f"engine {engine_file} takes batches {profile['min']}..{profile['max']} and Triton's batcher "
                        "sends any batch from 1 up to max_batch_size: rebuild it with --min-batch 1.")
    (in_name, in_type), = meta["inputs"].items()
    (out_name, out_type), = meta["outputs"].items()
    for name, dtype in ((in_name, in_type), (out_name, out_type)):
        if dtype not in TENSORRT_TYPES:
            raise UserError(f"engine {engine_file}: {name} is {dtype}, which Triton cannot carry: build it from a graph "
                            "with float inputs and outputs.")
    out_dims = (meta.get("output_shapes") or {}).get(out_name, [-1, contract.num_classes])
    return (TensorSpec(in_name, TENSORRT_TYPES[in_type], tuple(meta["shapes"][in_name]["max"][1:])),
            TensorSpec(out_name, TENSORRT_TYPES[out_type], tuple(out_dims[1:])), profile)


def _pixel_model(name: str, data_type: str) -> str:
    """The preprocessing model that makes ``data_type`` pixels: ``B_preprocess`` (FP32), ``B_preprocess_fp16``..."""
    return f"{name}_preprocess" + ("" if data_type == "TYPE_FP32" else "_" + data_type[len("TYPE_"):].lower())


def write_repository(onnx_file: str, output: str, engine_file: Optional[str] = None, name: Optional[str] = None,
                     cfg_file: Optional[str] = None, opts: Sequence[str] = (), models: Optional[Sequence[str]] = None,
                     max_batch_size: Optional[int] = None, preferred: Optional[Sequence[int]] = None,
                     max_queue_delay_us: int = 100, cpu_instances: int = 1, force: bool = False) -> List[Dict[str, Any]]:
    """Write the model repository; returns one summary row per model.

    Args:
        onnx_file: the classifier (dynamic batch), with its preprocessing contract (or pass ``cfg_file``).
        output: the repository folder to create.
        engine_file: its TensorRT engine, with the JSON sidecar; gives ``B_trt`` and the batching of every model.
        name: base name of the models (default: the contract's model name).
        cfg_file, opts: the config the file was exported with (checked against its contract, as the evaluators do).
        models: classifiers to serve, of ``trt``, ``onnx``, ``python`` (default: all the inputs allow).
        max_batch_size, preferred: batching of the models without an engine profile to follow
            (default: the config's TRT.MAX_BATCH and TRT.OPT_BATCH, the profile an engine would get).
        max_queue_delay_us: how long the dynamic batcher waits to fill a preferred batch.
        cpu_instances: instances of each Python-backend model.
        force: replace an existing ``output``.

    Raises:
        UserError: bad inputs (see :func:`onnx_io`, :func:`engine_io`) or an existing ``output`` without ``force``.
    """
    header = require_onnx(onnx_file)
    config = resolve_config(cfg_file, opts, onnx_contract(header), f"ONNX file {onnx_file}")
    contract = Preprocessing.from_config(config)
    name = name or contract.model
    onnx_input, onnx_output = onnx_io(header, onnx_file)
    models = list(models or (CLASSIFIERS if engine_file else CLASSIFIERS[1:]))
    if "trt" in models and not engine_file:
        raise UserError("the trt model needs the engine: pass --trt-engine X.engine, or leave trt out of --models.")
    if os.path.exists(output) and not force:
        raise UserError(f"{output} already exists: choose another --output, or pass --force to replace it.")
    require_parent_dir(output)
    if engine_file:
        require_engine(engine_file)
        engine_input, engine_output, profile = engine_io(engine_file, read_metadata(engine_file), contract)
        batching = Batching(profile["max"], tuple(preferred_sizes([profile["opt"], profile["max"]], profile["max"])),
                            max_queue_delay_us)
    else:
        top = max_batch_size or config.TRT.MAX_BATCH
        batching = Batching(top, tuple(preferred_sizes(preferred or [config.TRT.OPT_BATCH, top], top)), max_queue_delay_us)

    classifiers = []
    for suffix in models:
        model_name = f"{name}_{suffix}"
        if suffix == "trt":
            files = {"model.plan": engine_file}
            spec = base_config(model_name, batching, [engine_input], [engine_output], platform="tensorrt_plan",
                               contract=contract)
            classifiers.append(Classifier(suffix, add_instances(spec, "KIND_GPU"), files, engine_input, engine_output))
        elif suffix == "onnx":
            spec = base_config(model_name, batching, [onnx_input], [onnx_output], platform="onnxruntime_onnx",
                               backend="onnxruntime", contract=contract)
            classifiers.append(Classifier(suffix, add_instances(spec, "KIND_GPU"), {"model.onnx": onnx_file},
                                          onnx_input, onnx_output))
        else:
            spec = base_config(model_name, batching, [onnx_input], [onnx_output], backend="python", contract=contract)
            set_parameters(spec, {"intra_op_threads": "0"})
            files = {"model.onnx": onnx_file, "model.py": os.path.join(SOURCES, "onnxruntime_model.py")}
            classifiers.append(Classifier(suffix, add_instances(spec, "KIND_CPU", cpu_instances), files,
                                          onnx_input, onnx_output))

    helpers = {}  # model name -> (config, files)
    preprocess_files = {"model.py": os.path.join(SOURCES, "preprocess_model.py"),
                        "image_preprocessing.py": os.path.join(SOURCES, "image_preprocessing.py")}
    for classifier in classifiers:
        pixel_model = _pixel_model(name, classifier.input.data_type)
        if pixel_model not in helpers:
            spec = base_config(pixel_model, batching, [TensorSpec(IMAGE, "TYPE_STRING", (1,))],
                               [TensorSpec(PIXELS, classifier.input.data_type, tuple(contract.input_size))],
                               backend="python", contract=contract)
            helpers[pixel_model] = (add_instances(spec, "KIND_CPU", cpu_instances), preprocess_files)
    k = min(TOP_K, contract.num_classes)
    top_model = f"{name}_top5"
    top_input = TensorSpec(LOGITS, onnx_output.data_type, onnx_output.dims)
    spec = base_config(top_model, batching, [top_input], [TensorSpec(TOP5, "TYPE_INT64", (k,))], backend="python")
    helpers[top_model] = (add_instances(spec, "KIND_CPU", cpu_instances),
                          {"model.py": os.path.join(SOURCES, "top5_model.py")})
    ensembles = []
    for classifier in classifiers:
        if classifier.output.data_type != top_input.data_type:
            raise UserError(f"the {classifier.suffix} model outputs {classifier.output.data_type} and the ONNX file "
                            f"{top_input.data_type}: build the engine from a graph with the ONNX file's output type.")
        steps = [{"model": _pixel_model(name, classifier.input.data_type), "inputs": {IMAGE: IMAGE},
                  "outputs": {PIXELS: PIXELS}},
                 {"model": classifier.config.name, "inputs": {classifier.input.name: PIXELS},
                  "outputs": {classifier.output.name: LOGITS}},
                 {"model": top_model, "inputs": {LOGITS: LOGITS}, "outputs": {TOP5: TOP5}}]
        ensembles.append(ensemble_config(f"{classifier.config.name}_ensemble", batching,
                                         [TensorSpec(IMAGE, "TYPE_STRING", (1,))],
                                         [top_input, TensorSpec(TOP5, "TYPE_INT64", (k,))], steps, contract))

    every = [(c.config, c.files) for c in classifiers] + list(helpers.values()) + [(e, {}) for e in ensembles]
    if contract.labels:  # Triton's classification extension then answers with the class names
        for config in [c.config for c in classifiers] + ensembles:
            config.output[0].label_filename = LABELS_FILE  # the logits: a classifier's only output, an ensemble's first
    _write_folder(output, every, force, contract.labels)
    _LOG.info("wrote %s: %d models", output, len(every))
    return [{"model": c.name, "kind": c.platform or c.backend, "max_batch_size": c.max_batch_size,
             "preferred_batch_sizes": list(c.dynamic_batching.preferred_batch_size),
             "inputs": ", ".join(f"{t.name} {list(t.dims)}" for t in c.input),
             "outputs": ", ".join(f"{t.name} {list(t.dims)}" for t in c.output)} for c, _ in every]


def _write_folder(output: str, models: Sequence[tuple], force: bool, labels: Sequence[str] = ()) -> None:
    """Write every ``(config, files)`` under a temporary folder beside ``output``, then rename it to ``output``; a
    model whose output names a label file gets ``labels`` in it, beside its config.pbtxt (where Triton reads it)."""
    parent = os.path.dirname(os.path.abspath(output))
    old = None
    with writing(output):
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", suffix=".tmp", dir=parent)
        try:
            for config, files in models:
                version = os.path.join(tmp, config.name, "1")
                os.makedirs(version)
                for target, source in files.items():
                    shutil.copyfile(source, os.path.join(version, target))
                write_config(os.path.join(tmp, config.name, CONFIG_FILE), config)
                if any(o.label_filename for o in config.output):
                    with open(os.path.join(tmp, config.name, LABELS_FILE), "w", encoding="utf-8") as f:
                        f.write("".join(f"{label}\n" for label in labels))
            if force and os.path.exists(output):
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.old.", dir=parent)
                os.rename(output, os.path.join(old, "repository"))
            os.rename(tmp, output)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
            if old:
                shutil.rmtree(old)
