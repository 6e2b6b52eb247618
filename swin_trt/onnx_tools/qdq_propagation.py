"""Move per-tensor Q/DQ pairs through data-movement ops, so the graph stores INT8/FP8 where TensorRT would.

The exporter writes each Q/DQ pair right at the quantizer: ``x → Reshape →
Transpose → Q → DQ → MatMul``. The reshapes then move FP16 data. TensorRT
itself moves Quantize nodes backwards and Dequantize nodes forwards through
ops that only move data, so that in the engine those ops move INT8; the
graph should say so, because under strong typing it is the graph that tells
TensorRT what each tensor is, and the precision plan (trt/network_plan.py)
reads the graph. This pass makes the same moves in the ONNX file:

- a QuantizeLinear whose input is produced by a data-movement op that feeds
  nothing else moves before that op (onto every data input of a Concat);
- identical QuantizeLinear nodes on one tensor become one;
- a DequantizeLinear whose every consumer is a data-movement op moves after
  them (one copy per consumer).

Only per-tensor Q/DQ on activations move (a scalar scale): quantizing
commutes with moving elements around, so the graph computes bit for bit what
it computed before. Weight Q/DQ stay where they are (TensorRT folds them into
the weights), and a Q/DQ moves only through ops whose ONNX schema, at the
graph's opset, accepts the quantized type (FP8 needs opset 21 to pass a
Transpose and passes no Slice or Concat at any opset), and FP8 only through
the ops ONNX Runtime can run on FP8 (:data:`FP8_DATA_MOVEMENT`).
"""
from __future__ import annotations

import logging
from typing import List

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from swin_trt.logs import third_party_output

_LOG = logging.getLogger("swin")
# ops that only move or select elements; a per-tensor quantize commutes with each of them
DATA_MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Identity", "Concat"}
# FP8 tensors move through these only: ONNX Runtime's CPU provider (1.31) has no FP8 kernel for the others
# at opset 21, and the Q/DQ graphs must stay checkable in ONNX Runtime
FP8_DATA_MOVEMENT = {"Reshape", "Transpose", "Identity"}


def _scalar_scale(node: gs.Node) -> bool:
    scale = node.inputs[1]
    return isinstance(scale, gs.Constant) and int(np.prod(scale.shape)) == 1


def _quantized_type(node: gs.Node) -> str:
    """ONNX type string of the quantized tensor of a Q or DQ node, from its zero point (int8 when there is none)."""
    if len(node.inputs) < 3:
        return "tensor(uint8)" if node.op == "QuantizeLinear" else "tensor(int8)"
    dtype = node.inputs[2].dtype
    if isinstance(dtype, int):  # a type NumPy has no name for (FP8) is kept as its ONNX enum
        return f"tensor({onnx.helper.tensor_dtype_to_string(dtype).split('.')[-1].lower()})"
    return f"tensor({np.dtype(dtype).name})"


def _accepts(op: str, type_str: str, opset: int) -> bool:
    """Whether ``op`` is a data-movement op whose data input takes ``type_str`` at ``opset``."""
    if op not in (FP8_DATA_MOVEMENT if type_str.startswith("tensor(float8") else DATA_MOVEMENT):
        return False
    schema = onnx.defs.get_schema(op, opset)
    param = schema.inputs[0].type_str
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}.get(param, [param])
    return type_str in allowed


def _is_constant(tensor: gs.Tensor) -> bool:
    """A weight: a constant, or computed from constants only."""
    if isinstance(tensor, gs.Constant):
        return True
    return bool(tensor.inputs) and all(_is_constant(t) for t in tensor.inputs[0].inputs)


def _params(node: gs.Node) -> tuple:
    """What makes two Q nodes compute the same function of their input: the same scale and zero point tensors
    (by name: copies made here share them; values are not read, an FP8 constant would be cast) and attributes."""
    return tuple(t.name for t in node.inputs[1:]) + tuple(sorted((k, str(v)) for k, v in node.attrs.items()))


def _copy(node: gs.Node, graph: gs.Graph, source: gs.Tensor, name: str) -> gs.Variable:
    """A new node like ``node`` (a Q or DQ) reading ``source``; returns its output variable."""
    out = gs.Variable(f"{name}_out", dtype=node.outputs[0].dtype)
    graph.nodes.append(gs.Node(node.op, f"{name}", attrs=dict(node.attrs), inputs=[source] + list(node.inputs[1:]),
                               outputs=[out]))
    return out


def _merge_duplicate_quantizers(graph: gs.Graph) -> int:
    merged = 0
    for tensor in list(graph.tensors().values()):
        groups = {}
        for user in list(tensor.outputs):
            if user.op == "QuantizeLinear" and user.inputs[0] is tensor:
                key = _params(user)
                if key in groups:
                    kept = groups[key].outputs[0]
                    for consumer in list(user.outputs[0].outputs):
                        consumer.inputs = [kept if t is user.outputs[0] else t for t in consumer.inputs]
                    if user.outputs[0] in graph.outputs:
                        continue
                    user.outputs.clear()
                    merged += 1
                else:
                    groups[key] = user
    return merged


def _move_quantize_back(graph: gs.Graph, opset: int) -> int:
    for node in graph.nodes:
        if node.op != "QuantizeLinear" or not node.outputs or not _scalar_scale(node):
            continue
        tensor = node.inputs[0]
        if len(tensor.inputs) != 1 or tensor in graph.outputs or len(tensor.outputs) != 1 or _is_constant(tensor):
            continue
        mover = tensor.inputs[0]
        if not _accepts(mover.op, _quantized_type(node), opset):
            continue
        data = range(len(mover.inputs)) if mover.op == "Concat" else [0]
        for i in data:
            mover.inputs[i] = _copy(node, graph, mover.inputs[i], f"{node.name}_before_{mover.name}_{i}")
        mover.outputs = list(node.outputs)  # the mover now produces the quantized tensor
        node.outputs.clear()
        node.inputs.clear()
        return 1
    return 0


def _move_dequantize_forward(graph: gs.Graph, opset: int) -> int:
    for node in graph.nodes:
        if node.op != "DequantizeLinear" or not node.outputs or not _scalar_scale(node) or _is_constant(node.inputs[0]):
            continue
        tensor = node.outputs[0]
        users = list(tensor.outputs)
        if not users or tensor in graph.outputs:
            continue
        quantized = _quantized_type(node)
        if any(u.op == "Concat" or not _accepts(u.op, quantized, opset) or u.inputs[0] is not tensor
               or any(t is tensor for t in u.inputs[1:]) for u in users):
            continue
        for user in users:
            result = user.outputs[0]
            quantized = gs.Variable(f"{result.name}_quantized", dtype=node.inputs[0].dtype)
            user.inputs[0] = node.inputs[0]
            user.outputs = [quantized]
            graph.nodes.append(gs.Node("DequantizeLinear", f"{node.name}_after_{user.name}", attrs=dict(node.attrs),
                                       inputs=[quantized] + list(node.inputs[1:]), outputs=[result]))
        node.outputs.clear()
        node.inputs.clear()
        return 1
    return 0


def propagate_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its per-tensor Q/DQ nodes moved through data-movement ops (see the module docstring).

    Returns:
        a new model; ``model`` is not modified.
    """
    with third_party_output("onnx-graphsurgeon"):  # its notes on FP8 constants it cannot hold in numpy
        graph = gs.import_onnx(model)
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        moves: List[int] = [0, 0, 0]
        while True:
            step = (_merge_duplicate_quantizers(graph), _move_quantize_back(graph, opset),
                    _move_dequantize_forward(graph, opset))
            if not any(step):
                break
            moves = [m + s for m, s in zip(moves, step)]
            graph.cleanup()
        graph.cleanup().toposort()
        out = gs.export_onnx(graph)
    _LOG.info("Q/DQ moved through data-movement ops: %d quantize back, %d dequantize forward, %d merged",
              moves[1], moves[2], moves[0])
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    return out
