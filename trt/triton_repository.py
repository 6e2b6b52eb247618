"""Write a Triton Inference Server model repository from an ONNX classifier and, optionally, its TensorRT engine.

    python trt/triton_repository.py --onnx-file weights/swin_tiny_fp16.onnx --trt-engine weights/swin_tiny_fp16.engine \\
        --output model_repository

Models (B = the ONNX file's model name, or --name): B_trt (tensorrt_plan, from the engine and its JSON
sidecar), B_onnx (onnxruntime backend, GPU), B_python (ONNX Runtime inside the Python backend, CPU), B_preprocess
(encoded images -> tensor, as the file's preprocessing contract says), B_top5, and B_<classifier>_ensemble for
each classifier: image bytes in, logits and top-5 out. Every config.pbtxt is Triton's own schema, read back
strictly. The repository is written to a temporary folder and renamed into place.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from swin_trt import cli
from swin_trt.errors import run_main
from swin_trt.logs import create_logger
from swin_trt.serving.repository import CLASSIFIERS, write_repository
from swin_trt.tables import format_table
from swin_trt.validation import check_args


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx-file", required=True, help="the classifier, exported with a dynamic batch")
    parser.add_argument("--trt-engine", help="its engine (X.engine with X.engine.json beside it): adds the trt model")
    parser.add_argument("--output", required=True, help="the repository folder to create")
    parser.add_argument("--name", help="base name of the models (default: the model name the ONNX file records)")
    parser.add_argument("--models", nargs="+", choices=CLASSIFIERS,
                        help="classifiers to write (default: trt with --trt-engine, onnx, python)")
    parser.add_argument("--max-batch-size", type=int,
                        help="max_batch_size without an engine (default TRT.MAX_BATCH; with one: its profile's max)")
    parser.add_argument("--preferred-batch-sizes", type=int, nargs="+",
                        help="dynamic batcher's preferred sizes without an engine (default TRT.OPT_BATCH and the max)")
    parser.add_argument("--max-queue-delay-us", type=int, default=100,
                        help="how long the dynamic batcher waits for a preferred batch (microseconds)")
    parser.add_argument("--cpu-instances", type=int, default=1, help="instances of each Python-backend model")
    parser.add_argument("--force", action="store_true", help="replace an existing --output")
    cli.add_config(parser, required=False, what="config the file was exported with (default: the file's own record)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    create_logger()
    check_args(args, {"max_batch_size": 1, "preferred_batch_sizes": 1, "max_queue_delay_us": 0, "cpu_instances": 1})
    rows = write_repository(args.onnx_file, args.output, args.trt_engine, args.name, args.cfg, args.opts, args.models,
                            args.max_batch_size, args.preferred_batch_sizes, args.max_queue_delay_us,
                            args.cpu_instances, args.force)
    print(format_table(rows))


if __name__ == "__main__":
    run_main(main)
