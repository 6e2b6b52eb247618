"""Our Swin ONNX export against timm's: node counts, shape ops, and the time of export, FP16 conversion and engine build.

    python benchmarks/export_vs_timm.py [--cfg configs/swin_tiny_patch4_window7_224.yaml] [--output-json bench.json]

Both models have random weights and are exported by the same TorchScript
exporter (dynamo=False) at the same opset with a dynamic batch. Ours is then
made lean (onnx_tools.graph.lean_graph), converted to FP16 (ModelOpt
AutoCast, the config's keep-in-FP32 list) and built into an FP16 engine with
trt/build_engine.py (TensorRT, or TensorRT-RTX ahead of time on a CPU).
--timm-fp16 also times AutoCast on timm's graph (slow: it is large).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

import onnx
import torch

from swin_trt.config import get_config
from swin_trt.errors import run_main
from swin_trt.files import write_json
from swin_trt.logs import create_logger
from swin_trt.models import build_model
from swin_trt.onnx_tools.export import export_onnx
from swin_trt.onnx_tools.fp16 import convert_to_fp16
from swin_trt.onnx_tools.graph import lean_graph, op_histogram, shape_op_count
from swin_trt.tables import format_table

DEFAULT_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                           "swin_tiny_patch4_window7_224.yaml")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default=DEFAULT_CFG, help="model config; its MODEL.NAME must be a timm model name")
    parser.add_argument("--opset", type=int, help="opset of both exports (default: ONNX.OPSET)")
    parser.add_argument("--backend", default="auto", help="engine builder: auto | tensorrt | tensorrt_rtx")
    parser.add_argument("--no-build", action="store_true", help="skip the engine build")
    parser.add_argument("--timm-fp16", action="store_true", help="also time the FP16 conversion of timm's graph")
    parser.add_argument("--work-dir", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--output-json", help="write the results here")
    return parser.parse_args(argv)


def graph_stats(model: onnx.ModelProto) -> Dict[str, Any]:
    ops = op_histogram(model)
    return {"nodes": len(model.graph.node), "Shape": ops.get("Shape", 0), "shape_ops": shape_op_count(model)}


def timed_export(model: torch.nn.Module, path: str, img_size: int, opset: int) -> Dict[str, Any]:
    """Export with a dynamic batch; stats of the raw graph and of the lean one, export seconds."""
    start = time.perf_counter()
    raw = export_onnx(model, path, img_size, batch_size=1, dynamic_batch=True, opset=opset)
    seconds = time.perf_counter() - start
    stats = {f"raw_{k}": v for k, v in graph_stats(raw).items()}
    lean = lean_graph(raw)
    stats.update({f"lean_{k}": v for k, v in graph_stats(lean).items()}, export_s=seconds)
    onnx.save(lean, path)
    return {"stats": stats, "graph": lean}


def timed_fp16(graph: onnx.ModelProto, path: str, keep_fp32_ops: Sequence[str]) -> Dict[str, Any]:
    start = time.perf_counter()
    converted = convert_to_fp16(graph, keep_fp32_ops)
    seconds = time.perf_counter() - start
    onnx.save(converted, path)
    return {"fp16_s": seconds, "fp16_nodes": len(converted.graph.node)}


def timed_build(onnx_path: str, engine_path: str, config, backend: str) -> Dict[str, Any]:
    from swin_trt.trt.build import BatchProfile, build_engine

    profile = BatchProfile(config.TRT.MIN_BATCH, config.TRT.OPT_BATCH, config.TRT.MAX_BATCH)
    start = time.perf_counter()
    meta = build_engine(onnx_path, engine_path, mode="fp16", backend=backend, default_profile=profile,
                        workspace_mib=config.TRT.WORKSPACE_MIB, optimization_level=config.TRT.OPTIMIZATION_LEVEL)
    return {"build_s": time.perf_counter() - start, "builder": f"{meta['module']} {meta['version']}"}


def run_benchmark(config, work_dir: str, opset: int, backend: str = "auto", build: bool = True,
                  timm_fp16: bool = False) -> Dict[str, Dict[str, Any]]:
    """Rows ``ours`` and ``timm``: graph stats and seconds per stage."""
    import timm

    size = config.DATA.IMG_SIZE
    torch.manual_seed(0)
    cpu_start = time.process_time()
    ours = timed_export(build_model(config).eval(), os.path.join(work_dir, "ours.onnx"), size, opset)
    row_ours = dict(ours["stats"])
    row_ours.update(timed_fp16(ours["graph"], os.path.join(work_dir, "ours_fp16.onnx"), config.ONNX.FP16_KEEP_FP32_OPS))
    if build:
        row_ours.update(timed_build(os.path.join(work_dir, "ours_fp16.onnx"), os.path.join(work_dir, "ours_fp16.engine"),
                                    config, backend))
    row_ours["total_s"] = row_ours["export_s"] + row_ours["fp16_s"] + row_ours.get("build_s", 0.0)
    # CPU seconds of this process (all threads), model construction included: less sensitive to a shared machine
    row_ours["total_cpu_s"] = time.process_time() - cpu_start

    reference = timm.create_model(config.MODEL.NAME, pretrained=False, num_classes=config.MODEL.NUM_CLASSES).eval()
    theirs = timed_export(reference, os.path.join(work_dir, "timm.onnx"), size, opset)
    row_timm = dict(theirs["stats"])
    if timm_fp16:
        row_timm.update(timed_fp16(theirs["graph"], os.path.join(work_dir, "timm_fp16.onnx"), config.ONNX.FP16_KEEP_FP32_OPS))
    return {"ours": row_ours, "timm": row_timm}


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    create_logger()
    config = get_config(args.cfg)
    opset = args.opset or config.ONNX.OPSET
    with tempfile.TemporaryDirectory(prefix="export_vs_timm-") as tmp:
        work_dir = args.work_dir or tmp
        os.makedirs(work_dir, exist_ok=True)
        results = run_benchmark(config, work_dir, opset, args.backend, not args.no_build, args.timm_fp16)
    rows = [{"export": name, **row} for name, row in results.items()]
    columns = ["export", "raw_nodes", "raw_Shape", "raw_shape_ops", "lean_nodes", "lean_shape_ops", "export_s",
               "fp16_s", "fp16_nodes", "build_s", "total_s", "total_cpu_s"]
    print(f"{config.MODEL.NAME}, opset {opset}, dynamic batch, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; times in seconds")
    print(format_table(rows, columns))
    if "builder" in results["ours"]:
        print(f"engine built with {results['ours']['builder']}")
    if args.output_json:
        write_json(args.output_json, {"model": config.MODEL.NAME, "opset": opset, "cpus": os.cpu_count(),
                                      "load_average": os.getloadavg()[0], "results": results})


if __name__ == "__main__":
    run_main(main)
