"""Graph hygiene and statistics for exported ONNX files."""
from __future__ import annotations

import collections
from typing import Dict

import onnx
from onnx import numpy_helper


def lean_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn ``Constant`` nodes into initializers and drop ``Identity`` nodes on initializers.

    The TorchScript exporter writes reshape targets as Constant nodes and
    aliases equal-valued parameters through Identity nodes; neither is
    computation, and the builders treat both as weights. Done in place.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    initializers = {i.name for i in graph.initializer}
    rename: Dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value" \
                and node.output[0] not in outputs:
            tensor = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
            graph.initializer.append(tensor)
            initializers.add(node.output[0])
            continue
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
    del graph.node[:]
    graph.node.extend(keep)
    return model


def op_histogram(model: onnx.ModelProto) -> Dict[str, int]:
    """Node count per op type (top-level graph), most frequent first."""
    counts = collections.Counter(node.op_type for node in model.graph.node)
    return dict(counts.most_common())


# ops that compute dimensions at run time; a lean graph has none for static dimensions
SHAPE_OPS = ("Shape", "Gather", "Range")


def shape_op_count(model: onnx.ModelProto) -> int:
    """Number of Shape, Gather and Range nodes (top-level graph)."""
    return sum(node.op_type in SHAPE_OPS for node in model.graph.node)


def io_dims(model: onnx.ModelProto) -> Dict[str, list]:
    """Dimensions of each graph input and output: ints for static ones, names for symbolic ones."""
    out = {}
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        out[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    return out
