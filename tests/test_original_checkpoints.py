"""Checkpoints as the original Swin-Transformer's training writes them, read with weights_only=True."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
from yacs.config import CfgNode

from swin_trt.checkpoint_file import load_checkpoint_file
from swin_trt.config import get_config
from swin_trt.errors import UserError
from swin_trt.models import build_model, load_weights
from swin_trt.training.lr_scheduler import build_scheduler
from swin_trt.training.optimizer import build_optimizer

from conftest import MICRO_CFG, run_cmd


def original_training_checkpoint(path, trained_checkpoint) -> CfgNode:
    """Write ``path`` as the original's ``utils.save_checkpoint`` does, with the trained micro weights; returns its config.

    Keys model, optimizer, lr_scheduler, max_accuracy, scaler, epoch and config (the run's frozen yacs CfgNode);
    optimizer and scheduler after one real step, so their states hold tensors and the scheduler's fields.
    """
    config = get_config(MICRO_CFG)
    model = build_model(config)
    load_weights(model, str(trained_checkpoint))
    optimizer = build_optimizer(config, model, lr=1e-3)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch=10, warmup_lr=1e-5, min_lr=1e-5)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    scheduler.step_update(1)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
             "max_accuracy": 96.38888888888889,
             "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                        "_growth_tracker": 17},
             "epoch": 14, "config": config}
    torch.save(state, path)  # plain torch.save, as the original does
    return config


def test_original_training_checkpoint_evaluates_like_ours(trained_micro, tmp_path):
    original = tmp_path / "ckpt_epoch_14.pth"
    original_training_checkpoint(original, trained_micro["checkpoint"])
    out = tmp_path / "eval.json"
    run_cmd(["main.py", "--eval", "--cfg", MICRO_CFG, "--resume", str(original), "--data-path",
             str(trained_micro["data"]), "--output", str(tmp_path), "--output-json", str(out)])
    metrics = json.loads(out.read_text())
    assert metrics["images"] == 360
    assert metrics["acc1"] == trained_micro["metrics"]["acc1"]


def test_original_checkpoint_reads_back_config_and_training_state(trained_micro, tmp_path):
    path = tmp_path / "ckpt_epoch_14.pth"
    config = original_training_checkpoint(path, trained_micro["checkpoint"])
    state = load_checkpoint_file(str(path))
    assert isinstance(state["config"], CfgNode) and isinstance(state["config"].MODEL.SWIN, CfgNode)
    assert state["config"] == config and state["config"].is_frozen()
    assert state["epoch"] == 14 and state["max_accuracy"] == pytest.approx(96.3889, abs=1e-4)
    model = build_model(config)
    optimizer = build_optimizer(config, model, lr=1e-3)
    optimizer.load_state_dict(state["optimizer"])  # the training state is usable for resuming
    build_scheduler(config, optimizer, 10, 1e-5, 1e-5).load_state_dict(state["lr_scheduler"])


def test_checkpoint_with_another_unsafe_type_names_it(tmp_path):
    path = tmp_path / "deit_style.pth"
    torch.save({"model": {}, "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(UserError, match=f"checkpoint {path} holds objects of type argparse.Namespace, which loading "
                                        "with weights_only=True refuses"):
        load_checkpoint_file(str(path))
