"""Blackwell's block formats in the ONNX graph: MXFP8 and NVFP4 nodes added to the FP16 graph, as TensorRT parses them.

ModelOpt's block quantizers run on CUDA only, and its ONNX route for them ends in an FP16 conversion that needs
TensorRT itself (AutoCast types the custom ops through TensorRT's parser). So the graph is made here in two steps:

1. The fake-quantized model is exported with its block quantizers switched off (:func:`block_quantizers_off`): the
   result is the FP16 graph of every other format, its FP8 Q/DQ pairs included (the attention matmuls and residuals,
   quant/quantize.py), converted by the same AutoCast call. This step needs no GPU.
2. :func:`insert_block_nodes` adds, at every GEMM whose Linear holds block quantizers, the nodes ModelOpt's exporter
   writes (``modelopt.torch.quantization.export_onnx``), in the same form:

   - NVFP4 input: ``trt::TRT_FP4DynamicQuantize`` (axis -1, block 16, E4M3 block scales) with the per-tensor scale
     ``amax / (6 * 448)`` of the calibrated input quantizer, a DequantizeLinear of the block scales by it, and a
     block DequantizeLinear (axis -1, block 16) of the FP4 values; a Cast to FP16 feeds the GEMM.
   - NVFP4 weight: FLOAT4E2M1 values with E4M3 block scales and an FP32 per-tensor scale, computed by ModelOpt's own
     exporter functions from the module's FP32 weight (the graph's FP16 copy would move the scales), and the same two
     DequantizeLinear, then the transpose the MatMul takes and a Cast to FP16.
   - MXFP8 input: ``trt::TRT_MXFP8DynamicQuantize`` (axis -1, block 32, E4M3 values, E8M0 scales) and
     ``trt::TRT_MXFP8DequantizeLinear`` to FP16.
   - MXFP8 weight: E4M3 values with E8M0 block scales (ModelOpt's functions) and ``TRT_MXFP8DequantizeLinear`` to FP16.

   GELU keeps its exact form: ModelOpt's MXFP8 exporter rewrites it to the tanh approximation, which is another
   function of the activations; this graph computes what the fake-quantized model does.

The graph is raised to opset 23 (FLOAT4E2M1 and block DequantizeLinear) and imports the ``trt`` domain. ONNX Runtime
cannot run these nodes; :mod:`quant.block_check` checks the graph instead.
"""
from __future__ import annotations

import contextlib
import logging
import re
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import onnx
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

_LOG = logging.getLogger("swin")
TRT_DOMAIN = "trt"
FP4_MAX, FP8_MAX = 6.0, 448.0
NVFP4_BLOCK, MXFP8_BLOCK = 16, 32
NVFP4_OPSET = 23  # FLOAT4E2M1 tensors (and DequantizeLinear's block_size, from 21)
MIN_COMPUTE_CAPABILITY = {"mxfp8": (10, 0), "nvfp4": (10, 0)}  # Blackwell: B200/B300 10.x, RTX 50 / RTX PRO 12.0


def block_format(quantizer: nn.Module) -> Optional[str]:
    """``mxfp8`` or ``nvfp4`` for a block quantizer that is on, else None."""
    if not quantizer.is_enabled or not quantizer.block_sizes:
        return None
    return {(4, 3): "mxfp8", (2, 1): "nvfp4"}.get(tuple(quantizer.num_bits) if isinstance(quantizer.num_bits, (tuple, list))
                                                 else quantizer.num_bits)


def block_linears(model: nn.Module) -> Dict[str, Tuple[str, nn.Module]]:
    """Linear name -> (format, module) for every Linear whose input and weight quantizers are block quantizers."""
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        formats = {block_format(q) for q in (getattr(module, "input_quantizer", None),
                                             getattr(module, "weight_quantizer", None)) if q is not None}
        if len(formats) == 1 and None not in formats:
            found[name] = (formats.pop(), module)
    return found


@contextlib.contextmanager
def block_quantizers_off(model: nn.Module) -> Iterator[Dict[str, Tuple[str, nn.Module]]]:
    """Switch the block quantizers of :func:`block_linears` off while the graph is exported (step 1)."""
    linears = block_linears(model)
    quantizers = [q for _, module in linears.values() for q in (module.input_quantizer, module.weight_quantizer)]
    for quantizer in quantizers:
        quantizer.disable()
    try:
        yield linears
    finally:
        for quantizer in quantizers:
            quantizer.enable()


def _gemm_of(graph: onnx.GraphProto, linear: str) -> onnx.NodeProto:
    """The MatMul or Gemm that the Linear ``linear`` exported as (its scope is the module path)."""
    scope = "/" + re.sub(r"\.(?!\d)", "/", linear) + "/"  # layers.0.blocks.1.attn.qkv -> /layers.0/blocks.1/attn/qkv/
    found = [n for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.name.startswith(scope)]
    if len(found) != 1:
        raise ValueError(f"{len(found)} GEMM nodes under {scope} in the exported graph")
    return found[0]


class _Graph:
    """Node, initializer and value-info edits of one graph, with fresh names."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.producers = {o: n for n in self.graph.node for o in n.output}
        self.new_nodes: List[Tuple[onnx.NodeProto, onnx.NodeProto]] = []  # (node, the node it goes before)

    def constant(self, name: str, array: np.ndarray, data_type: Optional[int] = None) -> str:
        tensor = numpy_helper.from_array(array, name)
        if data_type is not None:  # raw bytes of a type numpy does not have (FP4, FP8): the array holds them
            tensor = helper.make_tensor(name, data_type, list(array.shape) if data_type != TensorProto.FLOAT4E2M1
                                        else [array.shape[0] * 2, *array.shape[1:]], array.tobytes(), raw=True)
        self.graph.initializer.append(tensor)
        return name

    def node(self, before: onnx.NodeProto, op: str, inputs: List[str], outputs: List[str], name: str,
             domain: str = "", types: Optional[List[int]] = None, **attributes) -> onnx.NodeProto:
        node = helper.make_node(op, inputs, outputs, name=name, domain=domain, **attributes)
        self.new_nodes.append((node, before))
        for output, elem_type in zip(outputs, types or []):
            self.graph.value_info.append(helper.make_tensor_value_info(output, elem_type, None))
        return node

    def weight_of(self, gemm: onnx.NodeProto) -> Tuple[np.ndarray, List[onnx.NodeProto]]:
        """The weight of ``gemm`` as (out, in) float32, and the nodes that only made it (to remove)."""
        name = gemm.input[1]
        if gemm.op_type == "Gemm":
            trans_b = next((a.i for a in gemm.attribute if a.name == "transB"), 0)
            array = numpy_helper.to_array(self.inits[name]).astype(np.float32)
            return (array if trans_b else array.T), []
        producer = self.producers.get(name)
        if producer is not None and producer.op_type == "Transpose" and producer.input[0] in self.inits:
            return numpy_helper.to_array(self.inits[producer.input[0]]).astype(np.float32), [producer]
        if name in self.inits:  # the exporter folded W.T into the initializer MatMul reads
            return numpy_helper.to_array(self.inits[name]).astype(np.float32).T, []
        raise ValueError(f"the weight of {gemm.name} is neither an initializer nor its transpose")

    def commit(self, removed: List[onnx.NodeProto]) -> None:
        """Put every new node before the node it feeds (a valid topological order), drop ``removed`` and the
        initializers nothing reads any more."""
        for node in removed:
            self.graph.node.remove(node)
        order = list(self.graph.node)
        for node, before in self.new_nodes:
            order.insert(order.index(before), node)
        del self.graph.node[:]
        self.graph.node.extend(order)
        used = {i for n in self.graph.node for i in n.input} | {o.name for o in self.graph.output}
        kept = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)


def _nvfp4_input(g: _Graph, gemm: onnx.NodeProto, prefix: str, amax: float) -> str:
    x = gemm.input[0]
    scale = g.constant(f"{prefix}/input_scale", np.array(amax / FP4_MAX / FP8_MAX if amax > 0 else 1.0, np.float32))
    g.node(gemm, "TRT_FP4DynamicQuantize", [x, scale], [f"{prefix}/x_f4", f"{prefix}/x_scale_f8"],
           f"{prefix}/TRT_FP4DynamicQuantize", TRT_DOMAIN, [TensorProto.FLOAT4E2M1, TensorProto.FLOAT8E4M3FN],
           axis=-1, block_size=NVFP4_BLOCK, scale_type=TensorProto.FLOAT8E4M3FN)
    g.node(gemm, "DequantizeLinear", [f"{prefix}/x_scale_f8", scale], [f"{prefix}/x_scale"],
           f"{prefix}/DequantizeLinear_scale", types=[TensorProto.FLOAT])
    g.node(gemm, "DequantizeLinear", [f"{prefix}/x_f4", f"{prefix}/x_scale"], [f"{prefix}/x_dq"],
           f"{prefix}/DequantizeLinear", types=[TensorProto.FLOAT], axis=-1, block_size=NVFP4_BLOCK)
    g.node(gemm, "Cast", [f"{prefix}/x_dq"], [f"{prefix}/x_f16"], f"{prefix}/Cast", types=[TensorProto.FLOAT16],
           to=TensorProto.FLOAT16)
    return f"{prefix}/x_f16"


def _nvfp4_weight(g: _Graph, gemm: onnx.NodeProto, prefix: str, weight: np.ndarray) -> str:
    """ModelOpt's NVFP4 weight compression (modelopt.onnx.export.nvfp4_exporter) of ``weight`` (out, in)."""
    from modelopt.onnx.export.nvfp4_exporter import _cast_fp4, _encode_nvfp4_block_scale
    from modelopt.onnx.quantization.quant_utils import (get_weights_scaling_factor, get_weights_scaling_factor_2,
                                                        quantize)

    per_tensor = get_weights_scaling_factor_2(weight)
    per_block, per_block_f8 = _encode_nvfp4_block_scale(get_weights_scaling_factor(weight, NVFP4_BLOCK, per_tensor))
    values = _cast_fp4(quantize(weight, NVFP4_BLOCK, per_block, per_tensor))
    w = g.constant(f"{prefix}/weight_f4", values, TensorProto.FLOAT4E2M1)
    s8 = g.constant(f"{prefix}/weight_scale_f8", per_block_f8, TensorProto.FLOAT8E4M3FN)
    s32 = g.constant(f"{prefix}/weight_scale_f32", np.array(per_tensor, np.float32))
    g.node(gemm, "DequantizeLinear", [s8, s32], [f"{prefix}/weight_scale"], f"{prefix}/DequantizeLinear_weight_scale",
           types=[TensorProto.FLOAT])
    g.node(gemm, "DequantizeLinear", [w, f"{prefix}/weight_scale"], [f"{prefix}/weight_dq"],
           f"{prefix}/DequantizeLinear_weight", types=[TensorProto.FLOAT], axis=-1, block_size=NVFP4_BLOCK)
    return f"{prefix}/weight_dq"


def _mxfp8_input(g: _Graph, gemm: onnx.NodeProto, prefix: str) -> str:
    x = gemm.input[0]
    g.node(gemm, "TRT_MXFP8DynamicQuantize", [x], [f"{prefix}/x_f8", f"{prefix}/x_scale_e8m0"],
           f"{prefix}/TRT_MXFP8DynamicQuantize", TRT_DOMAIN, [TensorProto.FLOAT8E4M3FN, TensorProto.UINT8],
           axis=-1, block_size=MXFP8_BLOCK, output_dtype=TensorProto.FLOAT8E4M3FN)
    g.node(gemm, "TRT_MXFP8DequantizeLinear", [f"{prefix}/x_f8", f"{prefix}/x_scale_e8m0"], [f"{prefix}/x_dq"],
           f"{prefix}/TRT_MXFP8DequantizeLinear", TRT_DOMAIN, [TensorProto.FLOAT16], axis=-1, block_size=MXFP8_BLOCK,
           output_dtype=TensorProto.FLOAT16)
    return f"{prefix}/x_dq"


def _mxfp8_weight(g: _Graph, gemm: onnx.NodeProto, prefix: str, weight: np.ndarray) -> str:
    """ModelOpt's MXFP8 weight compression (modelopt.onnx.export.mxfp8_exporter) of ``weight`` (out, in)."""
    from modelopt.onnx.quantization.qdq_utils import _cast_fp8
    from modelopt.onnx.quantization.quant_utils import compute_e8m0, get_amax

    e8m0 = compute_e8m0(get_amax(weight, -1, MXFP8_BLOCK), weight.shape, -1, MXFP8_BLOCK)
    scaled = weight / np.exp2(np.repeat(e8m0.astype(np.float32), MXFP8_BLOCK, axis=-1) - 127)
    w = g.constant(f"{prefix}/weight_f8", _cast_fp8(scaled.astype(np.float32)), TensorProto.FLOAT8E4M3FN)
    s = g.constant(f"{prefix}/weight_scale_e8m0", e8m0.astype(np.uint8))
    g.node(gemm, "TRT_MXFP8DequantizeLinear", [w, s], [f"{prefix}/weight_dq"], f"{prefix}/TRT_MXFP8DequantizeLinear_w",
           TRT_DOMAIN, [TensorProto.FLOAT16], axis=-1, block_size=MXFP8_BLOCK, output_dtype=TensorProto.FLOAT16)
    return f"{prefix}/weight_dq"


QUANT_FORMAT_KEY, MIN_CC_KEY = "swin_trt.quant_format", "swin_trt.min_compute_capability"  # ONNX metadata_props


def write_quant_record(model: onnx.ModelProto, linears: Dict[str, Tuple[str, nn.Module]]) -> onnx.ModelProto:
    """Record in ``model.metadata_props`` the block formats the graph holds and the GPU they need (the compute
    capability from which TensorRT runs them: Blackwell); ``trt/build_engine.py`` copies both into the engine's
    sidecar and the runtime refuses an older GPU in one sentence."""
    formats = sorted({fmt for fmt, _ in linears.values()})
    need = max(MIN_COMPUTE_CAPABILITY[f] for f in formats)
    kept = [p for p in model.metadata_props if p.key not in (QUANT_FORMAT_KEY, MIN_CC_KEY)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=QUANT_FORMAT_KEY, value="+".join(formats))
    model.metadata_props.add(key=MIN_CC_KEY, value=f"{need[0]}.{need[1]}")
    return model


def quant_record(model: onnx.ModelProto) -> Dict[str, str]:
    """``{"format": "nvfp4", "min_compute_capability": "10.0"}`` of a graph with block formats, else ``{}``."""
    props = {p.key: p.value for p in model.metadata_props}
    if QUANT_FORMAT_KEY not in props:
        return {}
    return {"format": props[QUANT_FORMAT_KEY], "min_compute_capability": props.get(MIN_CC_KEY, "10.0")}


def insert_block_nodes(model: onnx.ModelProto, linears: Dict[str, Tuple[str, nn.Module]]) -> onnx.ModelProto:
    """Step 2 of the module docstring on the FP16 graph ``model`` (edited in place, and returned)."""
    g = _Graph(model)
    removed: List[onnx.NodeProto] = []
    for linear, (fmt, module) in linears.items():
        gemm = _gemm_of(model.graph, linear)
        prefix = "/" + re.sub(r"\.(?!\d)", "/", linear) + f"/{fmt}"
        graph_weight, made_it = g.weight_of(gemm)
        removed += made_it
        # the model's FP32 weight, not the graph's FP16 copy: the fake quantizer's (and so the scales) are of FP32
        weight = module.weight.detach().float().cpu().numpy()
        if weight.shape != graph_weight.shape:
            raise ValueError(f"the GEMM of {linear} reads a {graph_weight.shape} weight, the module has {weight.shape}")
        if fmt == "nvfp4":
            amax = float(module.input_quantizer.amax.detach().float().reshape(-1)[0])
            x, w = _nvfp4_input(g, gemm, prefix, amax), _nvfp4_weight(g, gemm, prefix, weight)
            w_dtype = TensorProto.FLOAT
        else:
            x, w = _mxfp8_input(g, gemm, prefix), _mxfp8_weight(g, gemm, prefix, weight)
            w_dtype = TensorProto.FLOAT16
        if gemm.op_type == "MatMul":
            g.node(gemm, "Transpose", [w], [f"{prefix}/weight_t"], f"{prefix}/Transpose_weight", types=[w_dtype],
                   perm=[1, 0])
            w = f"{prefix}/weight_t"
        elif not any(a.name == "transB" and a.i for a in gemm.attribute):
            gemm.attribute.append(helper.make_attribute("transB", 1))
        if w_dtype != TensorProto.FLOAT16:  # as ModelOpt's NVFP4 exporter: the GEMM's inputs are cast to FP16
            g.node(gemm, "Cast", [w], [f"{prefix}/weight_f16"], f"{prefix}/Cast_weight", types=[TensorProto.FLOAT16],
                   to=TensorProto.FLOAT16)
            w = f"{prefix}/weight_f16"
        gemm.input[0], gemm.input[1] = x, w
    g.commit(removed)
    if any(fmt == "nvfp4" for fmt, _ in linears.values()):
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < NVFP4_OPSET:
                opset.version = NVFP4_OPSET  # FLOAT4E2M1 needs 23; no op of these graphs changed meaning since 19
    if not any(o.domain == TRT_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(TRT_DOMAIN, 1))
    _LOG.info("block formats: %s", ", ".join(f"{sum(f == fmt for f, _ in linears.values())} {fmt.upper()} GEMMs"
                                             for fmt in sorted({f for f, _ in linears.values()})))
    return model
