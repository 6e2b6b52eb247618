"""TensorRT's engine inspector: per-layer precision and tactic of a built engine (needs a GPU to deserialize it).

``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` gives
one entry per engine layer when the engine was built with
``ProfilingVerbosity.DETAILED`` (trt/build_engine.py does). This module turns
that JSON into report rows.

A layer's tensor says its type in one of two layouts:

- TensorRT 10: ``"Format/Datatype": "Row major linear FP16 format"`` (or a bare
  ``"Half"``/``"Float"``), the type one word of a sentence;
- TensorRT 11 (and TensorRT-RTX): ``"Datatype": "Half"`` and, separately,
  ``"Format": "Row major linear FP16 format (kLINEAR)"``; the engine's
  ``I/O Tensors`` spell the key ``DataType``.

Types are read as whole words (``BFloat16`` is not ``Float``), the type field
before the format sentence, and named as TensorRT's ``DataType`` members.
"""
from __future__ import annotations

import collections
import json
import re
from typing import Any, Dict, List, Optional

from swin_trt.errors import UserError

# words TensorRT uses for a data type (its DataType printer and its format descriptions) -> DataType member name
DTYPE_WORDS: Dict[str, str] = {
    "FLOAT": "FLOAT", "FP32": "FLOAT", "HALF": "HALF", "FP16": "HALF", "BFLOAT16": "BF16", "BF16": "BF16",
    "INT8": "INT8", "UINT8": "UINT8", "FP8": "FP8", "FLOAT8E4M3": "FP8", "INT32": "INT32", "INT64": "INT64",
    "BOOL": "BOOL", "INT4": "INT4", "FP4": "FP4",
}
_DTYPE_RE = re.compile(r"\b(" + "|".join(sorted(DTYPE_WORDS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_GEMM_WORDS = ("gemm", "matrixmultiply", "matmul", "convolution", "conv", "fmha", "mha", "attention")


def dtype_in_text(text: str) -> Optional[str]:
    """The first data-type word of ``text`` as a DataType member name (None: none, e.g. "N/A due to dynamic shapes")."""
    match = _DTYPE_RE.search(text)
    return DTYPE_WORDS[match.group(1).upper()] if match else None


def tensor_dtype(entry: Dict[str, Any]) -> Optional[str]:
    """Data type of one inspector tensor entry, in either layout (see the module docstring)."""
    for key in ("Datatype", "DataType", "Format/Datatype", "Format"):
        found = dtype_in_text(str(entry.get(key) or ""))
        if found:
            return found
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
    from swin_trt.trt.engine import TRTEngine

    engine = TRTEngine(engine_file, backend=backend_choice)
    trt = engine.backend.module
    inspector = engine.engine.create_engine_inspector()
    if inspector is None:
        raise UserError(f"{engine.backend.describe()} gave no engine inspector for {engine_file} (see the TensorRT "
                        "errors above): rebuild the engine with trt/build_engine.py.")
    return parse_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def summarize(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Counts per kind of layer and precision, e.g. ``{"kind": "attention", "INT8": 24, "FLOAT": 0}``."""
    counts: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in rows:
        kind = row.get("kind") or ("gemm" if row.get("gemm") else "other")
        counts[kind][row["precision"]] += 1
    precisions = sorted({p for c in counts.values() for p in c})
    return [dict({"kind": kind, "total": sum(c.values())}, **{p: c.get(p, 0) for p in precisions})
            for kind, c in sorted(counts.items())]
