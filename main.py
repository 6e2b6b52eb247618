"""Train or evaluate a Swin model in PyTorch: CPU, one GPU, or torchrun (DDP).

    python main.py --cfg configs/swin_tiny_patch4_window7_224.yaml --resume swin_tiny_patch4_window7_224.pth \
        --data-path /data/imagenet --eval
    python main.py --cfg configs/swin_micro_digits.yaml --data-path datasets/digits
    torchrun --nproc_per_node 2 main.py --cfg ... --data-path ...

Training resumes from the newest ``ckpt_epoch_N.pth`` in ``OUTPUT/MODEL.NAME/TAG``
(TRAIN.AUTO_RESUME) and ends with ``ckpt_final.pth``; both runs end with an
evaluation on ``val/`` (swin_trt/training/session.py).
"""
from __future__ import annotations

import argparse

from swin_trt import cli
from swin_trt.errors import run_main
from swin_trt.files import write_json
from swin_trt.out_of_memory import out_of_memory_guard
from swin_trt.tables import format_table, weakest_classes
from swin_trt.training.session import check_inputs, make_config, run_session


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Swin Transformer training and evaluation")
    cli.add_config(p, required=False, what="model config under configs/ (optional when --resume or --pretrained is a "
                   "model folder or hf:ORG/NAME)")
    cli.add_data(p, holds="train/ and val/")
    p.add_argument("--pretrained", help="weights to fine-tune from (a head of another size is re-initialised): "
                   + cli.WEIGHTS_HELP)
    p.add_argument("--resume", help="weights to evaluate, or a checkpoint to resume training from: " + cli.WEIGHTS_HELP)
    p.add_argument("--output", default=None, metavar="DIR", help="root of output folders (default: output)")
    p.add_argument("--tag", help="sub-folder under OUTPUT/MODEL.NAME")
    p.add_argument("--eval", action="store_true", help="evaluate only")
    amp = p.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None, help="FP16 autocast on GPU (default on)")
    amp.add_argument("--disable-amp", "--disable_amp", dest="amp", action="store_false", help="run in FP32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    cli.add_device(p)
    p.add_argument("--seed", type=int, help="random seed")
    cli.add_output_json(p, "the final evaluation metrics")
    cli.add_launcher(p)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    config = make_config(args)
    check_inputs(args, config)
    with out_of_memory_guard(config.DATA.BATCH_SIZE):
        metrics, rank = run_session(config, args.device, args.compile)
    if rank == 0:
        print(format_table([{k: v for k, v in metrics.items() if k != "classes"}]))
        if weakest_classes(metrics):
            print(weakest_classes(metrics))
        if args.output_json:
            write_json(args.output_json, {k: v for k, v in metrics.items() if k not in ("model", "device")})


if __name__ == "__main__":
    run_main(main)
