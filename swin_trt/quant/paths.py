"""Where the quantization flow writes: one name per file, read by the flow and by the pipeline that plans it."""
from __future__ import annotations

import os
from typing import Dict

from yacs.config import CfgNode


def default_paths(config: CfgNode, fmt: str, folder: str = "weights") -> Dict[str, str]:
    """Output files of the quantization flow in ``folder``.

    ``<MODEL.NAME>_<fmt>.onnx`` (Q/DQ graph), ``<MODEL.NAME>_<fmt>_ptq.pth``
    (calibrated checkpoint) and ``<MODEL.NAME>_<fmt>_qat.pth`` (after fine-tuning).
    """
    stem = os.path.join(folder, f"{config.MODEL.NAME}_{fmt}")
    return {"onnx": f"{stem}.onnx", "ptq": f"{stem}_ptq.pth", "qat": f"{stem}_qat.pth"}
