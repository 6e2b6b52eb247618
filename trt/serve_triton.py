"""Serve a model repository on this machine with the Triton server that nvidia-pytriton bundles (127.0.0.1 only).

    python trt/serve_triton.py --model-repository model_repository [--http-port 8000 --grpc-port 8001]

The server runs from its own environment (.venv/triton-server, made by the README's second command, or
$TRITON_SERVER_ENV; see swin_trt/serving/server.py for why) until Ctrl-C or --seconds. It has only the Python
backend: the B_python model and its ensemble load, the tensorrt_plan and onnxruntime models are listed as
unavailable with the server's reason. On a GPU, serve the same repository with NGC's tritonserver (README).
"""
from __future__ import annotations

import argparse
import time
from typing import Optional, Sequence

from swin_trt.errors import UserError, run_main
from swin_trt.logs import create_logger
from swin_trt.serving.client import repository_status
from swin_trt.serving.server import LocalTritonServer
from swin_trt.tables import format_table
from swin_trt.validation import check_args


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", required=True, help="folder written by trt/triton_repository.py")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port on 127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port on 127.0.0.1")
    parser.add_argument("--server-env", help="the server's environment (default: $TRITON_SERVER_ENV, else .venv/triton-server)")
    parser.add_argument("--seconds", type=float, help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--log-file", help="write the server's log here (default: a temporary file)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    create_logger()
    check_args(args, {"http_port": (1, 65535), "grpc_port": (1, 65535)})
    if args.seconds is not None and args.seconds <= 0:
        raise UserError(f"--seconds is {args.seconds}: pass a number of seconds above 0.")
    with LocalTritonServer(args.model_repository, args.http_port, args.grpc_port, args.server_env,
                           log_file=args.log_file) as server:
        print(format_table(repository_status(server.http_url)))
        print(f"serving on {server.http_url} (HTTP) and {server.grpc_url} (gRPC), started in {server.started_in:.1f} s; "
              "Ctrl-C stops it", flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while (deadline is None or time.monotonic() < deadline) and server.process.poll() is None:
            time.sleep(0.5)
        if server.process.poll() is not None:
            raise UserError(f"tritonserver stopped by itself (code {server.process.returncode}); its log ends: "
                            f"{server.log_tail()}")


if __name__ == "__main__":
    run_main(main)
