"""The command-line flags several commands share, each defined once, with one meaning everywhere."""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional

from swin_trt.trt.backend import BACKEND_CHOICES


WEIGHTS_HELP = ("a .pth or .safetensors file, a timm or transformers model folder, or hf:ORG/NAME[@REVISION] (a folder "
                "brings its own config: --cfg is then optional)")


def add_config(parser: argparse.ArgumentParser, required: bool = True, what: str = "model config under configs/") -> None:
    """``--cfg FILE`` and ``--opts KEY VALUE ...`` (the original's names)."""
    parser.add_argument("--cfg", required=required, metavar="FILE", help=what)
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="override config keys")


def add_data(parser: argparse.ArgumentParser, holds: str = "val/", batch: str = "images per process and step") -> None:
    """``--data-path``, ``--batch-size`` and ``--num-workers`` (``--workers`` is accepted as the same flag)."""
    parser.add_argument("--data-path", help=f"ImageNet-style dataset root holding {holds} (default: DATA.DATA_PATH)")
    parser.add_argument("--batch-size", type=int, help=f"{batch} (default: DATA.BATCH_SIZE)")
    parser.add_argument("--num-workers", "--workers", dest="num_workers", type=int,
                        help="data loader worker processes (default: DATA.NUM_WORKERS)")


def add_onnx_batch(parser: argparse.ArgumentParser) -> None:
    """``--batch-size-onnx N`` (a fixed batch) and ``--dynamic-batch`` / ``--no-dynamic-batch`` (a symbolic one)."""
    parser.add_argument("--batch-size-onnx", type=int,
                        help="fixed batch of the exported graph (default: ONNX.BATCH_SIZE; overrides ONNX.DYNAMIC_BATCH)")
    parser.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=None,
                        help="symbolic batch dimension in the exported graph (default: ONNX.DYNAMIC_BATCH)")


def onnx_batch_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """Config overrides of :func:`add_onnx_batch`'s flags: as in the original, ``--batch-size-onnx`` alone asks for
    that fixed batch; with ``--dynamic-batch`` too it is only the example batch of the export."""
    dynamic = args.dynamic_batch
    if dynamic is None and args.batch_size_onnx is not None:
        dynamic = False
    return {"ONNX__BATCH_SIZE": args.batch_size_onnx, "ONNX__DYNAMIC_BATCH": dynamic}


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="where PyTorch runs (auto: the GPU when there is one)")


def add_backend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="TensorRT-family module: auto (tensorrt with a GPU, else TensorRT-RTX), tensorrt, tensorrt_rtx")


def add_output_json(parser: argparse.ArgumentParser, what: str = "the metrics") -> None:
    parser.add_argument("--output-json", metavar="PATH", help=f"write {what} here as JSON")


def add_launcher(parser: argparse.ArgumentParser) -> None:
    """``--local_rank``, which ``python -m torch.distributed.launch`` passes; the rank is read from the environment."""
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


def add_original_eval(parser: argparse.ArgumentParser, meaning: Optional[str] = None) -> None:
    """``--eval``, accepted so the original repository's command lines run as written."""
    parser.add_argument("--eval", action="store_true",
                        help=meaning or "accepted for the original's command line (this command always evaluates)")
