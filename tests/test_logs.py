"""swin_trt/logs.py: third-party warnings a user cannot act on go to the debug log; the project's stay on the console."""
from __future__ import annotations

import logging
import warnings

import torch

from swin_trt.logs import route_third_party_warnings


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_modelopts_tracer_warnings_go_to_the_debug_log_and_the_projects_warnings_stay_shown():
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer

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
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    debug = [r.getMessage() for r in handler.records if r.levelno == logging.DEBUG]
    traced = [m for m in debug if "TracerWarning" in m and "modelopt" in m]
    assert len(traced) >= 3, debug
    assert not [w for w in shown if "modelopt" in w.filename], [str(w.message) for w in shown]
    assert [str(w.message) for w in shown if w.category is UserWarning] == ["a warning of this project's own"]
    assert "[torch.utils.cpp_extension] No CUDA runtime is found, using CUDA_HOME='/x'" in debug
