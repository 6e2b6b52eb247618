"""swin_trt/logs.py: third-party warnings a user cannot act on go to the debug log; the project's stay on the console."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch

from swin_trt.logs import route_third_party_warnings

from conftest import MICRO_CFG, REPO, TINY_CFG


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_modelopts_tracer_warnings_and_timms_scheduler_note_go_to_the_debug_log_and_the_projects_warnings_stay_shown():
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer
    from timm.scheduler import CosineLRScheduler

    log = logging.getLogger("swin")
    handler, level = _Records(), log.level
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    quantizer = TensorQuantizer(QuantizerAttributeConfig(num_bits=8, axis=None))
    quantizer.amax = torch.tensor(2.0)
    quantizer.eval()
    try:
        # record=True: what Python would print on stderr lands in `shown`
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            route_third_party_warnings()
            torch.jit.trace(quantizer, torch.randn(4, 8))  # what torch.onnx.export does to the quantized model
            warnings.warn("a warning of this project's own", UserWarning)
            logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found, using CUDA_HOME='/x'")
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            CosineLRScheduler(optimizer, t_initial=1, t_in_epochs=False)  # a QAT of one step: timm's logger warns
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    debug = [r.getMessage() for r in handler.records if r.levelno == logging.DEBUG]
    traced = [m for m in debug if "TracerWarning" in m and "modelopt" in m]
    assert len(traced) >= 3, debug
    assert not [w for w in shown if "modelopt" in w.filename], [str(w.message) for w in shown]
    assert [str(w.message) for w in shown if w.category is UserWarning] == ["a warning of this project's own"]
    assert "[torch.utils.cpp_extension] No CUDA runtime is found, using CUDA_HOME='/x'" in debug
    assert [m for m in debug if m.startswith("[timm.scheduler.cosine_lr] Cosine annealing scheduler will have no effect")]


# --- the console of a quantization run holds the toolkit's own lines only (issue 29) ----------------------------------


# what other libraries print when they chatter: warnings (with their file paths), onnx-graphsurgeon's [W]/[I] notes
# and its constant-tensor note, ModelOpt's quantizer count, deprecation notices
THIRD_PARTY = re.compile(r"Warning|\[[WIV]\] |Inserted \d+ quantizers|Accessing the values|deprecat|site-packages|"
                         r"colored module|PULP|TracerWarning", re.IGNORECASE)
RECIPES = {"fp8": ["--format", "fp8"], "auto": ["--format", "auto", "--effective-bits", "12"],
           "smoothquant": ["--opts-smooth"]}
# a Swin-T (its widths, depths and heads) on 128-px images with 4-token windows: the same layers, quantizers and
# graph, in a third of the time of 224 px
TINY_SHAPED = ["DATA.IMG_SIZE", "128", "MODEL.SWIN.WINDOW_SIZE", "4", "MODEL.NUM_CLASSES", "2"]


@pytest.fixture(scope="module")
def quantizable(tmp_path_factory):
    """Random weights of the micro model and of the Swin-T-shaped one, and two images per class of two classes."""
    from PIL import Image

    from swin_trt.config import get_config
    from swin_trt.models import build_model

    root = tmp_path_factory.mktemp("quiet")
    for split in ("train", "val"):
        for label in ("0", "1"):
            (root / "data" / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 40), (200 * int(label), 60 * i, 30)).save(root / "data" / split / label / f"{i}.png")
    checkpoints = {}
    for name, cfg, opts in (("micro", MICRO_CFG, ["MODEL.NUM_CLASSES", "2"]), ("swin_t_shaped", TINY_CFG, TINY_SHAPED)):
        torch.manual_seed(0)
        checkpoints[name] = (cfg, opts, root / f"{name}.pth")
        torch.save({"model": build_model(get_config(cfg, opts)).state_dict()}, checkpoints[name][2])
    return {"root": root, "data": root / "data", "checkpoints": checkpoints}


@pytest.mark.parametrize("model", ["micro", pytest.param("swin_t_shaped", marks=pytest.mark.slow)])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_quantization_console_shows_no_third_party_line(quantizable, model, recipe):
    cfg, opts, checkpoint = quantizable["checkpoints"][model]
    flags = RECIPES[recipe]
    if flags == ["--opts-smooth"]:
        flags, opts = [], opts + ["QUANT.SMOOTH_ALPHA", "0.5"]
    out = quantizable["root"] / f"out_{model}_{recipe}"
    # -W default: every warning Python would show once, deprecations included, as a user's terminal would
    proc = subprocess.run([sys.executable, "-W", "default", "swin_quant_flow.py", "--cfg", cfg, "--resume",
                           str(checkpoint), "--data-path", str(quantizable["data"]), "--quantize", "--ptq-only",
                           "--skip-fp32-eval", "--num-calib-batch", "1", "--batch-size", "2", "--num-workers", "0",
                           "--output", str(out), *flags, "--opts", *opts], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = (proc.stdout + proc.stderr).splitlines()
    assert any(line.startswith("| stage |") for line in console)  # the toolkit's own table
    assert [line for line in console if THIRD_PARTY.search(line)] == []
    logged = (out / "log_rank0.txt").read_text()
    assert "DEBUG | [modelopt] Inserted" in logged  # what left the console is kept in the log file
