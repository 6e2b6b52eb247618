"""Acc@1/Acc@5/loss and images/s of a classifier served by Triton Inference Server, over an ImageFolder's val/.

    python trt/eval_triton.py --url 127.0.0.1:8000 --model swin_micro_digits_python_ensemble \\
        --data-path datasets/digits --concurrency 8 [--protocol grpc --url 127.0.0.1:8001] [--output-json m.json]

An ensemble written by trt/triton_repository.py gets the image files' bytes (the server decodes, crops and
normalises them); a classifier gets tensors from the project's evaluation loader. The preprocessing comes from
the contract the model's config records, or from --cfg (checked against it). --concurrency requests are in
flight at once, each of --batch-size images, so the server's dynamic batcher can combine them.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from swin_trt import cli
from swin_trt.contract import resolve_config
from swin_trt.errors import UserError, run_main
from swin_trt.files import write_json
from swin_trt.logs import create_logger
from swin_trt.serving.client import DEFAULT_PORTS, PROTOCOLS, ServedClassifier
from swin_trt.serving.evaluate import evaluate_served
from swin_trt.tables import format_table
from swin_trt.validation import check_args, require_dataset


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="HOST:PORT of the server (default: 127.0.0.1:8000 for http, :8001 for grpc)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="http", help="tritonclient's protocol")
    parser.add_argument("--model", required=True, help="model or ensemble name in the server's repository")
    cli.add_config(parser, required=False, what="config the model was made with (default: the model's own record)")
    cli.add_data(parser, batch="images per request (default 1: the server's dynamic batcher makes the batches)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--max-images", type=int, help="evaluate only the first N images of val/")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for connecting and for each request")
    cli.add_output_json(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    create_logger()
    check_args(args, {"batch_size": 1, "num_workers": 0, "concurrency": 1, "max_images": 1})
    if args.timeout <= 0:
        raise UserError(f"--timeout is {args.timeout}: pass a number of seconds above 0.")
    served = ServedClassifier(args.url or f"127.0.0.1:{DEFAULT_PORTS[args.protocol]}", args.protocol, args.model,
                              args.timeout)
    config = resolve_config(args.cfg, args.opts, served.contract, f"model {args.model} at {served.url}",
                            DATA__DATA_PATH=args.data_path)
    if not config.DATA.DATA_PATH:
        raise UserError("no --data-path given: pass the folder that holds val/ (e.g. datasets/digits).")
    require_dataset(config.DATA.DATA_PATH, ["val"])
    metrics = evaluate_served(served, config, args.batch_size or 1, args.concurrency, args.num_workers, args.max_images)
    print(format_table([metrics], ["model", "protocol", "inputs", "concurrency", "batch_size", "images", "acc1", "acc5",
                                   "loss", "images_per_s", "latency_p50_ms", "latency_p99_ms"]))
    if args.output_json:
        write_json(args.output_json, metrics)


if __name__ == "__main__":
    run_main(main)
