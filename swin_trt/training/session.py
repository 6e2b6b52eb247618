"""Training and evaluation of a Swin model in PyTorch, as main.py runs them: on the CPU, one GPU or under torchrun."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Dict, Tuple

import torch
from timm.utils import random_seed
from yacs.config import CfgNode

from swin_trt.data import build_loader, build_mixup
from swin_trt.distributed import barrier, cleanup, init_distributed
from swin_trt.errors import UserError
from swin_trt.evaluation import evaluate_model
from swin_trt.files import atomic_write_bytes, make_folder, require_room
from swin_trt.logs import create_logger
from swin_trt.models import build_model, load_weights
from swin_trt.models.weight_source import read_checkpoint, resolve, weights_config
from swin_trt.training.checkpoints import checkpoint_bytes, latest_checkpoint, save_final, save_training_checkpoint
from swin_trt.training.loop import build_criterion, train_one_epoch
from swin_trt.training.lr_scheduler import build_scheduler, scaled_learning_rates
from swin_trt.training.optimizer import build_optimizer
from swin_trt.validation import check_args, check_config, require_dataset


def make_config(args: argparse.Namespace) -> CfgNode:
    """The config of a main.py run: YAML (or the weights folder's own files), ``--opts``, then the flags."""
    return weights_config(args.cfg, args.opts, args.resume or args.pretrained, DATA__BATCH_SIZE=args.batch_size,
                          DATA__DATA_PATH=args.data_path, DATA__NUM_WORKERS=args.num_workers,
                          MODEL__PRETRAINED=args.pretrained, MODEL__RESUME=args.resume, OUTPUT=args.output, TAG=args.tag,
                          AMP_ENABLE=args.amp, SEED=args.seed, EVAL_MODE=args.eval or None)


def check_inputs(args: argparse.Namespace, config: CfgNode) -> None:
    """Every number and input file of the run, before any work (each mistake is one :class:`UserError`)."""
    check_args(args, {"batch_size": 1, "num_workers": 0})
    check_config(config, args.cfg)
    for reference in (args.resume, args.pretrained):
        if reference:
            resolve(reference)
    if not config.EVAL_MODE:  # hours of training must not end at a checkpoint the disk cannot take
        output_dir = os.path.join(config.OUTPUT, config.MODEL.NAME, config.TAG)
        require_room(os.path.join(output_dir, "ckpt_epoch_0.pth"), checkpoint_bytes(config))
    splits = ["val"] if config.EVAL_MODE else ["train", "val"]
    if not config.DATA.DATA_PATH:
        raise UserError(f"no --data-path given: pass the folder that holds {' and '.join(s + '/' for s in splits)} "
                        "(e.g. datasets/digits).")
    require_dataset(config.DATA.DATA_PATH, splits)


def prepare_model(config: CfgNode, device: torch.device, compile_model: bool, world_size: int):
    """Model on ``device`` (weights from RESUME or PRETRAINED), and its DDP/compiled wrapper for running."""
    model = build_model(config)
    if config.MODEL.PRETRAINED and not config.MODEL.RESUME:
        load_weights(model, config.MODEL.PRETRAINED, new_head=True, what="pretrained checkpoint")
    model.to(device)
    runner = torch.compile(model) if compile_model else model
    if world_size > 1 and not config.EVAL_MODE:
        device_ids = [device.index] if device.type == "cuda" else None
        runner = torch.nn.parallel.DistributedDataParallel(runner, device_ids=device_ids)
    return model, runner


def run_eval(config: CfgNode, model, runner, device, logger: logging.Logger) -> dict:
    loader = build_loader(config, "val")
    metrics = evaluate_model(runner, loader, device, amp=config.AMP_ENABLE, over_ranks=True,
                             label_names=config.MODEL.LABEL_NAMES)
    logger.info("Acc@1 %.3f Acc@5 %.3f loss %.4f on %d images (%.1f images/s)", metrics["acc1"], metrics["acc5"],
                metrics["loss"], metrics["images"], metrics["images_per_s"])
    return metrics


def train(config: CfgNode, model, runner, device, world_size: int, output_dir: str, logger: logging.Logger) -> None:
    loader = build_loader(config, "train")
    lr, warmup_lr, min_lr = scaled_learning_rates(config, world_size)
    optimizer = build_optimizer(config, model, lr)
    scheduler = build_scheduler(config, optimizer, max(1, len(loader) // config.TRAIN.ACCUMULATION_STEPS),
                                warmup_lr, min_lr)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and config.AMP_ENABLE else None
    mixup = build_mixup(config)
    criterion = build_criterion(config, mixup)
    start_epoch = 0
    resume = (latest_checkpoint(output_dir) if config.TRAIN.AUTO_RESUME else None) or config.MODEL.RESUME
    if resume:
        state = read_checkpoint(resume)
        if "optimizer" not in state:
            raise UserError(f"{resume} holds weights only, not a training state: pass it as --pretrained to fine-tune.")
        load_weights(model, resume)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        logger.info("resumed from %s: continuing at epoch %d of %d", resume, start_epoch + 1, config.TRAIN.EPOCHS)
    dump = config.dump()
    for epoch in range(start_epoch, config.TRAIN.EPOCHS):
        stats = train_one_epoch(runner, loader, optimizer, scheduler, criterion, device, epoch, config, mixup, scaler)
        logger.info("epoch %d/%d loss %.4f lr %.2e %.0f images/s", epoch + 1, config.TRAIN.EPOCHS, stats["loss"],
                    stats["lr"], stats["images_per_s"])
        if int(os.environ.get("RANK", "0")) == 0 and ((epoch + 1) % config.SAVE_FREQ == 0 or epoch + 1 == config.TRAIN.EPOCHS):
            path = save_training_checkpoint(output_dir, epoch, model, optimizer, scheduler, scaler, dump)
            logger.info("saved %s", path)
        barrier()
    if int(os.environ.get("RANK", "0")) == 0:
        logger.info("saved %s", save_final(output_dir, model, dump))


def run_session(config: CfgNode, device_arg: str = "auto", compile_model: bool = False) -> Tuple[Dict[str, Any], int]:
    """main.py's job: train (resuming from the newest checkpoint) or only evaluate, then evaluate on val/.

    Starts and ends torch.distributed under torchrun. Returns the final metrics (summed over ranks) and this
    process's rank.
    """
    device, rank, world_size = init_distributed(device_arg)
    try:
        output_dir = os.path.join(config.OUTPUT, config.MODEL.NAME, config.TAG)
        make_folder(output_dir)
        logger = create_logger("swin", output_dir, rank)
        random_seed(config.SEED, rank)
        if rank == 0:
            atomic_write_bytes(os.path.join(output_dir, "config.yaml"), config.dump().encode())
        logger.info("%s on %s, %d process(es)", config.MODEL.NAME, device, world_size)
        model, runner = prepare_model(config, device, compile_model, world_size)
        if config.EVAL_MODE:
            if config.MODEL.RESUME:
                load_weights(model, config.MODEL.RESUME)
            else:
                logger.warning("no --resume given: evaluating random weights")
        else:
            train(config, model, runner, device, world_size, output_dir, logger)
            runner = model
        metrics = run_eval(config, model, runner, device, logger)
        return {"model": config.MODEL.NAME, "device": str(device), **metrics}, rank
    finally:
        cleanup()
