"""Images/s and request latency (p50/p99) of a classifier served by Triton, at several concurrencies and protocols.

    python benchmarks/triton_serving.py --repository /tmp/repo --data-path datasets/digits \\
        [--model swin_micro_digits_python_ensemble] [--concurrency 1 4 16] [--protocols http grpc] [--passes 2]

Starts the bundled tritonserver on free 127.0.0.1 ports with ``--repository`` (or uses a running one: ``--http-url``
and ``--grpc-url``), sends every image of val/ ``--passes`` times per row with the project's client
(swin_trt/serving/evaluate.py: one request per image, N in flight, the server's dynamic batcher combines them) after
a warm-up pass, and prints a markdown table with the machine, the date and this command. Latency is from sending a
request to having its logits, as the client sees it. perf_analyzer is not used: the PyPI package of that name is
an empty placeholder, and the binary inside tritonclient 2.51's wheel needs libraries no wheel installs
(docs/RESULTS.md). No asserts.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

from swin_trt.config import get_config
from swin_trt.contract import resolve_config
from swin_trt.errors import UserError, run_main
from swin_trt.files import write_json
from swin_trt.serving.client import ServedClassifier
from swin_trt.serving.evaluate import evaluate_served
from swin_trt.serving.server import LocalTritonServer
from swin_trt.tables import format_table


def session_rss_mb(pid: int) -> float:
    """Resident memory of the server and its backend stubs (every process of its session), in MB."""
    out = subprocess.run(["ps", "-o", "rss=", "-s", str(pid)], capture_output=True, text=True).stdout.split()
    return sum(int(v) for v in out) / 1024


def run_rows(urls: Dict[str, str], model: str, data_path: str, concurrencies: Sequence[int], passes: int,
             cfg: Optional[str]) -> List[Dict[str, Any]]:
    rows = []
    for protocol, url in urls.items():
        served = ServedClassifier(url, protocol, model)
        config = resolve_config(cfg, [], served.contract, f"model {model} at {url}", DATA__DATA_PATH=data_path)
        evaluate_served(served, config, 1, max(concurrencies))  # warm-up: sessions, connections, shared memory
        for concurrency in concurrencies:
            runs = [evaluate_served(served, config, 1, concurrency) for _ in range(passes)]
            images = sum(r["images"] for r in runs)
            seconds = sum(r["images"] / r["images_per_s"] for r in runs)
            rows.append({"protocol": protocol, "concurrency": concurrency, "images": images,
                         "images_per_s": images / seconds, "latency_p50_ms": _median([r["latency_p50_ms"] for r in runs]),
                         "latency_p99_ms": max(r["latency_p99_ms"] for r in runs), "acc1": runs[0]["acc1"]})
    return rows


def _median(values: List[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", help="model repository to serve with the bundled server")
    parser.add_argument("--http-url", help="a running server's HTTP HOST:PORT (instead of --repository)")
    parser.add_argument("--grpc-url", help="a running server's gRPC HOST:PORT (instead of --repository)")
    parser.add_argument("--model", default="swin_micro_digits_python_ensemble", help="model or ensemble to measure")
    parser.add_argument("--data-path", required=True, help="dataset root holding val/")
    parser.add_argument("--cfg", help="config of the model (default: the model's own record)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="requests in flight")
    parser.add_argument("--protocols", nargs="+", choices=("http", "grpc"), default=["http", "grpc"])
    parser.add_argument("--passes", type=int, default=2, help="passes over val/ per row")
    parser.add_argument("--output-json", help="write the rows here")
    args = parser.parse_args(argv)
    get_config(args.cfg)  # a wrong --cfg fails before the server starts
    header = (f"{datetime.date.today().isoformat()}, {platform.node()}, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}: python {' '.join(['benchmarks/triton_serving.py'] + list(sys.argv[1:]))}")
    if args.repository:
        with LocalTritonServer(args.repository) as server:
            rss = session_rss_mb(server.process.pid)
            urls = {p: server.url(p) for p in args.protocols}
            rows = run_rows(urls, args.model, args.data_path, args.concurrency, args.passes, args.cfg)
            header += (f"\nserver: tritonserver (nvidia-pytriton) started and answered in {server.started_in:.2f} s; "
                       f"{rss:.0f} MB resident after loading (server and backend stubs), "
                       f"{session_rss_mb(server.process.pid):.0f} MB after the runs")
    else:
        urls = {p: u for p, u in (("http", args.http_url), ("grpc", args.grpc_url)) if u and p in args.protocols}
        if not urls:
            raise UserError("pass --repository, or --http-url/--grpc-url of a running server.")
        rows = run_rows(urls, args.model, args.data_path, args.concurrency, args.passes, args.cfg)
    print(header)
    print(f"model {args.model}, one image per request\n")
    print(format_table(rows))
    if args.output_json:
        write_json(args.output_json, {"header": header, "model": args.model, "rows": rows})


if __name__ == "__main__":
    run_main(main)
