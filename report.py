"""The deployment report: accuracy per precision and backend, throughput per batch size, and a plot.

    python report.py --results results

Reads what the pipeline's steps wrote under ``--results``:
``accuracy/<backend>_<precision>.json`` (the metrics every evaluating script
writes with ``--output-json``; a ``{"status": "not run: ..."}`` file for a
step that could not run here), ``benchmark.json`` (trt/benchmark.py) and
``precision_plan.json`` (``trt/inspect_engine.py --compare`` over the graphs
the engines are built from) and ``quant_metrics.json`` (swin_quant_flow.py:
the fake-quantized PTQ and QAT accuracy). Writes ``report.md``, ``report.json``
and ``accuracy_vs_speed.png`` there: accuracy with the change against PyTorch
FP32, throughput with the speed-up against each backend's FP16, the precision
plans, a plot, and the provenance (commit, date, machine, package versions,
``--cfg`` and the SHA-256 of ``--checkpoint``).
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from swin_trt.config import get_config
from swin_trt.errors import run_main
from swin_trt.report import write_report


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results", help="folder the pipeline wrote its metrics to")
    p.add_argument("--title", default="", help="report heading")
    p.add_argument("--cfg", help="the config the results were made with (recorded with its SHA-256)")
    p.add_argument("--checkpoint", help="the trained weights they were made from (recorded with its SHA-256)")
    args = p.parse_args(argv)
    model = get_config(args.cfg).MODEL.NAME if args.cfg else None
    write_report(args.results, args.title, args.cfg, args.checkpoint, model)
    with open(os.path.join(args.results, "report.md"), encoding="utf-8") as f:
        print(f.read())


if __name__ == "__main__":
    run_main(main)
