"""Accuracy of an ONNX file over a validation set in ONNX Runtime."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from swin_trt.data import build_loader
from swin_trt.evaluation import evaluate
from swin_trt.onnx_tools.runtime import OrtPredictor, default_providers
from swin_trt.out_of_memory import out_of_memory_guard


def evaluate_onnx(config, onnx_file: str, batch_size: Optional[int] = None, num_workers: Optional[int] = None,
                  device_id: int = 0) -> Dict[str, Any]:
    """Metrics dict (acc1, acc5, loss, images, images_per_s, onnx, providers) of ``onnx_file`` on DATA.DATA_PATH/val.

    Raises:
        UserError: missing or unloadable file, or an input shape the config's images do not fit.
    """
    predictor = OrtPredictor(onnx_file, default_providers(device_id))
    predictor.check_config(config)
    loader = build_loader(config, "val", batch_size=batch_size or predictor.batch_size or config.DATA.BATCH_SIZE,
                          shuffle=False, num_workers=num_workers)
    with out_of_memory_guard(loader.batch_size):
        metrics = evaluate(predictor, loader, desc=f"onnxrt {os.path.basename(onnx_file)}", over_ranks=True,
                           label_names=config.MODEL.LABEL_NAMES)
    metrics.update(onnx=onnx_file, providers=",".join(predictor.providers), batch_size=loader.batch_size)
    return metrics
