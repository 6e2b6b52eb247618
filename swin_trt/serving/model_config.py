"""Triton model configurations, built as Triton's own ``ModelConfig`` protobuf messages and written as ``config.pbtxt``.

The schema is Triton's ``model_config.proto`` as tritonclient ships it
(``tritonclient.grpc.model_config_pb2``): a message is built field by field,
written with protobuf's text format, and read back with
``google.protobuf.text_format.Parse``, which refuses a misspelled or unknown
field; the server reads the same format with the same schema.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional, Sequence

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from swin_trt.contract import Preprocessing
from swin_trt.errors import UserError
from swin_trt.files import atomic_write_bytes

CONFIG_FILE = "config.pbtxt"
CONTRACT_PARAMETER = "swin_trt.preprocessing"  # the preprocessing contract (JSON), on every model that takes images

# TensorRT DataType names (as the engine's JSON sidecar records them) -> Triton data types
TENSORRT_TYPES = {"FLOAT": "TYPE_FP32", "HALF": "TYPE_FP16", "BF16": "TYPE_BF16", "INT8": "TYPE_INT8",
                  "INT32": "TYPE_INT32", "INT64": "TYPE_INT64", "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8"}
# ONNX TensorProto element types -> Triton data types
ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 3: "TYPE_INT8", 2: "TYPE_UINT8", 6: "TYPE_INT32",
              7: "TYPE_INT64", 9: "TYPE_BOOL"}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: its name, Triton data type (``TYPE_FP32``...) and dims without the batch."""

    name: str
    data_type: str
    dims: tuple

    def with_name(self, name: str) -> "TensorSpec":
        return dataclasses.replace(self, name=name)


@dataclasses.dataclass(frozen=True)
class Batching:
    """The batches a model takes and the dynamic batcher's aim: ``max_batch_size`` and the preferred sizes."""

    max_batch_size: int
    preferred: tuple
    max_queue_delay_us: int


def triton_type(name: str) -> int:
    """``TYPE_FP32`` -> the ``DataType`` enum value."""
    return model_config_pb2.DataType.Value(name)


def base_config(name: str, batching: Batching, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                platform: str = "", backend: str = "", contract: Optional[Preprocessing] = None,
                dynamic_batching: bool = True) -> model_config_pb2.ModelConfig:
    """A ``ModelConfig`` with its tensors, batch limit, dynamic batcher and (when given) the preprocessing contract."""
    config = model_config_pb2.ModelConfig(name=name, platform=platform, backend=backend,
                                          max_batch_size=batching.max_batch_size)
    for spec in inputs:
        config.input.add(name=spec.name, data_type=triton_type(spec.data_type), dims=list(spec.dims))
    for spec in outputs:
        config.output.add(name=spec.name, data_type=triton_type(spec.data_type), dims=list(spec.dims))
    if dynamic_batching:
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred)
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    if contract is not None:
        config.parameters[CONTRACT_PARAMETER].string_value = json.dumps(contract.as_dict(), sort_keys=True)
    return config


def add_instances(config: model_config_pb2.ModelConfig, kind: str, count: int = 1) -> model_config_pb2.ModelConfig:
    """One instance group of ``count`` instances of ``kind`` (``KIND_GPU`` or ``KIND_CPU``)."""
    config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.Kind.Value(kind), count=count)
    return config


def set_parameters(config: model_config_pb2.ModelConfig, values: Dict[str, str]) -> model_config_pb2.ModelConfig:
    """String parameters the model's code reads (``args["model_config"]["parameters"]`` in the Python backend)."""
    for key, value in values.items():
        config.parameters[key].string_value = value
    return config


def ensemble_config(name: str, batching: Batching, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                    steps: Sequence[dict], contract: Optional[Preprocessing] = None) -> model_config_pb2.ModelConfig:
    """An ensemble (``platform: "ensemble"``): ``steps`` are ``{"model", "inputs": {step input: ensemble tensor},
    "outputs": {step output: ensemble tensor}}`` in order; it has no batcher of its own (its steps have)."""
    config = base_config(name, batching, inputs, outputs, platform="ensemble", contract=contract,
                         dynamic_batching=False)
    for step in steps:
        added = config.ensemble_scheduling.step.add(model_name=step["model"], model_version=-1)
        for key, value in step["inputs"].items():
            added.input_map[key] = value
        for key, value in step["outputs"].items():
            added.output_map[key] = value
    return config


def config_text(config: model_config_pb2.ModelConfig) -> str:
    """The ``config.pbtxt`` text of ``config``."""
    return text_format.MessageToString(config)


def parse_config(text: str, source: str = CONFIG_FILE) -> model_config_pb2.ModelConfig:
    """Parse ``config.pbtxt`` text strictly with Triton's schema.

    Raises:
        UserError: a field the schema does not have, a value of the wrong type, or broken syntax.
    """
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise UserError(f"{source} is not a valid Triton model configuration ({err}): fix or rewrite it.") from None


def read_config(path: str) -> model_config_pb2.ModelConfig:
    """:func:`parse_config` of the file ``path``."""
    with open(path, encoding="utf-8") as f:
        return parse_config(f.read(), path)


def write_config(path: str, config: model_config_pb2.ModelConfig) -> None:
    """Write ``config`` to ``path`` (atomically) and check that it parses back to the same message."""
    text = config_text(config)
    if parse_config(text, path) != config:
        raise AssertionError(f"{path}: the written text does not parse back to the same ModelConfig")
    atomic_write_bytes(path, text.encode())


def contract_of(parameters: Dict[str, dict]) -> Optional[Preprocessing]:
    """The preprocessing contract in a served model's config parameters (``{key: {"string_value": ...}}``), or None."""
    value = (parameters or {}).get(CONTRACT_PARAMETER, {}).get("string_value")
    return Preprocessing.from_dict(json.loads(value)) if value else None


def preferred_sizes(sizes: Sequence[int], max_batch_size: int) -> List[int]:
    """Sorted distinct batch sizes of ``sizes`` that the batcher may form (1..``max_batch_size``)."""
    return sorted({int(s) for s in sizes if 1 <= int(s) <= max_batch_size})
