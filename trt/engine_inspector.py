"""TensorRT's engine inspector: per-layer precision and tactic of a built engine (needs a GPU to deserialize it).

``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` gives
one entry per engine layer when the engine was built with
``ProfilingVerbosity.DETAILED`` (trt/build_engine.py does). This module turns
that JSON into report rows.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from utils import UserError

_DTYPE_WORDS = (("int8", "INT8"), ("fp8", "FP8"), ("e4m3", "FP8"), ("bf16", "BF16"), ("half", "HALF"),
                ("fp16", "HALF"), ("float", "FLOAT"), ("fp32", "FLOAT"), ("int32", "INT32"), ("int64", "INT64"))
_GEMM_WORDS = ("gemm", "matrixmultiply", "matmul", "convolution", "conv", "fmha", "mha", "attention")


def tensor_dtype(entry: Dict[str, Any]) -> Optional[str]:
    """Data type of one inspector tensor entry: ``DataType`` (TensorRT 11) or parsed from ``Format/Datatype`` (10)."""
    if entry.get("DataType"):
        text = str(entry["DataType"]).lower()
    else:
        text = str(entry.get("Format/Datatype", "")).lower()
    for word, name in _DTYPE_WORDS:
        if word in text:
            return name
    return None


def engine_layer_row(layer: Dict[str, Any]) -> Dict[str, Any]:
    """A row of the report from one layer of ``IEngineInspector`` JSON (DETAILED verbosity)."""
    layer_type = str(layer.get("LayerType", ""))
    tactic = str(layer.get("TacticName") or layer.get("TacticValue") or "")
    haystack = (layer_type + " " + tactic + " " + str(layer.get("ParameterType", ""))).lower()
    inputs = [tensor_dtype(t) for t in layer.get("Inputs", [])]
    outputs = [tensor_dtype(t) for t in layer.get("Outputs", [])]
    is_gemm = any(w in haystack for w in _GEMM_WORDS)
    low = [d for d in inputs if d in ("INT8", "FP8")]
    precision = low[0] if low else "/".join(sorted({d for d in inputs if d})) or "?"
    return {"layer": str(layer.get("Name", "")), "type": layer_type, "gemm": is_gemm, "precision": precision,
            "inputs": inputs, "outputs": outputs, "tactic": tactic}


def parse_inspector_json(text: str) -> List[Dict[str, Any]]:
    """Rows from ``get_engine_information(LayerInformationFormat.JSON)``.

    Raises:
        UserError: the engine holds only layer names (built without DETAILED profiling verbosity).
    """
    data = json.loads(text)
    layers = data.get("Layers", [])
    if layers and all(isinstance(layer, str) for layer in layers):
        raise UserError("the engine records only layer names: rebuild it with trt/build_engine.py "
                        "(ProfilingVerbosity.DETAILED) to see precisions and tactics.")
    return [engine_layer_row(layer) for layer in layers]


def inspect_engine(engine_file: str, backend_choice: str = "auto") -> List[Dict[str, Any]]:
    """Rows for every layer of a built engine (needs a GPU that can deserialize it)."""
    from trt.engine import TRTEngine

    engine = TRTEngine(engine_file, backend=backend_choice)
    trt = engine.backend.module
    inspector = engine.engine.create_engine_inspector()
    return parse_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
