"""Accuracy and speed of a TensorRT engine on the validation images.

    python trt/eval_trt.py --eval --cfg configs/swin_tiny_patch4_window7_224.yaml \
        --resume weights/swin_tiny_fp16.engine --data-path ../imagenet_1k --batch-size 64

``--cfg`` is checked against the preprocessing the engine's JSON sidecar
copies from its ONNX file (one sentence on a mismatch); without it that record
is used (``--compare-checkpoint`` needs ``--cfg``: it builds the PyTorch model).
Reports Acc@1/Acc@5, the engine's own images/s (CUDA events around each
engine call) and end-to-end images/s (wall clock, data included), and with
``--compare-checkpoint`` the top-1 agreement and largest logit difference
with the PyTorch model in FP32 on the same GPU batches. By default (``--loader fast``)
images come from data/fast_loader.py (decode and resize in worker processes,
copy and normalise on a side stream); ``--loader gpu-decode`` decodes JPEGs
with nvJPEG and resizes whole batches on the GPU (data/gpu_decode.py);
``--loader pil`` uses the training code's loader. Batches outside the engine's profile are run in
profile-sized chunks.

``--loader gpu-decode`` is the fast path (5,043-7,065 images/s on the H100
machine against 2,517-3,013 for 16 CPU workers; benchmarks/data_pipeline.py), but
nvJPEG upsamples 4:2:0 chroma differently from libjpeg-turbo/PIL (decoded
pixels differ by about 3 grey levels on average), so the default ``fast``
decodes exactly as the PyTorch and ONNX Runtime evaluations do.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch

from swin_trt import cli
from swin_trt.contract import Preprocessing, resolve_config
from swin_trt.errors import UserError, run_main
from swin_trt.files import write_json
from swin_trt.out_of_memory import out_of_memory_guard
from swin_trt.logs import create_logger
from swin_trt.tables import format_table, weakest_classes
from swin_trt.trt.evaluate import check_engine_config, evaluate_engine, gpu_batches, load_reference_model
from swin_trt.trt.metadata import read_metadata
from swin_trt.models.weight_source import is_folder_reference, weights_config
from swin_trt.validation import check_args, check_config, require_dataset, require_engine


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_original_eval(parser)
    cli.add_config(parser, required=False, what="config of the model the engine was built from (default: its record)")
    parser.add_argument("--resume", required=True, help="TensorRT engine file")
    cli.add_data(parser, batch="images per batch")
    parser.add_argument("--loader", choices=("fast", "gpu-decode", "pil"), default="fast",
                        help="data pipeline: decode in workers (fast, decodes like PIL), with nvJPEG on the GPU "
                             "(faster, chroma decoded slightly differently), or the PIL loader")
    parser.add_argument("--compare-checkpoint", help="PyTorch checkpoint to compare logits with (needs --cfg)")
    parser.add_argument("--cuda-graph", action="store_true", help="replay each batch size from a CUDA graph")
    cli.add_backend(parser)
    cli.add_output_json(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    logger = create_logger()
    from swin_trt.trt.engine import TRTEngine

    check_args(args, {"batch_size": 1, "num_workers": 0})
    require_engine(args.resume)
    meta = read_metadata(args.resume)
    record = (meta or {}).get("preprocessing")
    config = resolve_config(args.cfg, args.opts, Preprocessing.from_dict(record) if record else None,
                            f"engine {args.resume}", DATA__DATA_PATH=args.data_path, DATA__BATCH_SIZE=args.batch_size)
    check_config(config, args.cfg or args.resume)
    model_config = None
    if args.compare_checkpoint:
        if not args.cfg and not is_folder_reference(args.compare_checkpoint):
            raise UserError("--compare-checkpoint builds the PyTorch model, whose architecture the engine does not "
                            "record: pass --cfg too (a model folder or hf:ORG/NAME carries its own).")
        model_config = weights_config(args.cfg, args.opts, args.compare_checkpoint)
    if not config.DATA.DATA_PATH:
        raise UserError("no --data-path given: pass the folder that holds val/ (e.g. datasets/digits).")
    require_dataset(config.DATA.DATA_PATH, ["val"])
    check_engine_config(meta, config, args.resume)
    with out_of_memory_guard(config.DATA.BATCH_SIZE):
        engine = TRTEngine(args.resume, backend=args.backend, cuda_graph=args.cuda_graph)
        model = load_reference_model(model_config, args.compare_checkpoint, engine.device) if model_config else None
        batches = gpu_batches(config, args.loader, engine.device, engine.inputs[0].dtype, config.DATA.BATCH_SIZE,
                              args.num_workers)
        metrics = evaluate_engine(engine, batches, model, label_names=config.MODEL.LABEL_NAMES)
    metrics.update(engine=args.resume, loader=args.loader, batch_size=config.DATA.BATCH_SIZE,
                   gpu=torch.cuda.get_device_name(engine.device), backend=engine.backend.describe())
    logger.info("Acc@1 %.3f Acc@5 %.3f on %d images", metrics["acc1"], metrics["acc5"], metrics["images"])
    columns = ["acc1", "acc5", "images", "engine_images_per_s", "end_to_end_images_per_s"]
    columns += ["torch_acc1", "top1_agreement", "max_abs"] if model is not None else []
    print(format_table([metrics], columns))
    if weakest_classes(metrics):
        print(weakest_classes(metrics))
    if args.output_json:
        write_json(args.output_json, metrics)


if __name__ == "__main__":
    run_main(main)
