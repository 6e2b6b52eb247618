"""One ONNX file in ONNX Runtime, as a predictor ``images -> logits`` that takes any batch size."""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort
import torch
from yacs.config import CfgNode

from swin_trt.contract import config_input_shape
from swin_trt.errors import UserError
from swin_trt.files import require_file

_LOG = logging.getLogger("swin")
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
Provider = Union[str, Tuple[str, dict]]


def default_providers(device_id: int = 0) -> List[Provider]:
    """CUDA execution provider (then CPU) when ONNX Runtime has it and a GPU is visible, else CPU only.

    ``onnxruntime-gpu`` lists the CUDA provider even on machines without a GPU,
    so the GPU itself is asked through torch.
    """
    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtPredictor:
    """An ``onnxruntime.InferenceSession`` over one classifier file.

    Calling it with images of any batch size returns their logits: a
    fixed-batch file gets the images in chunks of its batch, the last chunk
    padded with zeros and the padding's logits dropped.

    Args:
        path: the .onnx file (FP32, FP16 with FP32 I/O, or Q/DQ INT8).
        providers: execution providers; :func:`default_providers` when None.
        threads: intra-op threads of the CPU provider (0: ONNX Runtime's default).

    Raises:
        UserError: the file is missing or ONNX Runtime cannot load it.
    """

    def __init__(self, path: str, providers: Optional[Sequence[Provider]] = None, threads: int = 0) -> None:
        require_file(path, "ONNX file", "pass the path of a file written by export.py")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # Run Q/DQ graphs as written (integer rounding, float math) instead of fusing DQ->MatMul into
        # integer kernels: on x86 CPUs without VNNI those multiply u8 x s8 pairs with 16-bit saturation
        # (vpmaddubsw), which corrupts full-range INT8 weights (measured: 3% top-1 flips on digits).
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        try:
            self.session = ort.InferenceSession(path, options, providers=list(providers or default_providers()))
        except Exception as err:  # ORT raises its own pybind types (InvalidProtobuf, Fail, NotImplemented...)
            reason = str(err).strip().splitlines()[0][:200]
            raise UserError(f"ONNX file {path} could not be loaded by ONNX Runtime ({reason}): is it an ONNX file this ONNX Runtime can run?") from None
        self.path = path
        if len(self.session.get_inputs()) != 1 or len(self.session.get_outputs()) != 1:
            raise UserError(f"ONNX file {path} has {len(self.session.get_inputs())} inputs and "
                            f"{len(self.session.get_outputs())} outputs, not one image input and one logits output: "
                            "pass a classifier exported by export.py.")
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = tuple(inp.shape)  # (B or a name, C, H, W)
        self.output_shape = tuple(out.shape)  # (B or a name, classes)
        self.input_dtype = _NUMPY_TYPES.get(inp.type, np.float32)
        self.providers = self.session.get_providers()
        _LOG.info("%s: input %s %s, providers %s", path, self.input_shape, inp.type, ", ".join(self.providers))

    @property
    def batch_size(self) -> Optional[int]:
        """The file's fixed batch, or None when the batch dimension is symbolic."""
        batch = self.input_shape[0] if self.input_shape else None
        return batch if isinstance(batch, int) and batch > 0 else None

    def check_config(self, config: CfgNode) -> None:
        """Raise a :class:`UserError` unless the file takes the config's images and gives its number of classes."""
        expected = config_input_shape(config)
        shape = self.input_shape[1:]
        if len(self.input_shape) != 4 or tuple(shape) != expected:
            raise UserError(f"ONNX file {self.path} takes input {list(self.input_shape)} but the config "
                            f"({config.MODEL.NAME}) needs (N, {expected[0]}, {expected[1]}, {expected[2]}): "
                            "pass the config it was exported with, or export it again with this config.")
        classes = self.output_shape[-1] if self.output_shape else None
        if isinstance(classes, int) and classes != config.MODEL.NUM_CLASSES:
            raise UserError(f"ONNX file {self.path} gives {classes} logits but the config ({config.MODEL.NAME}) "
                            f"has MODEL.NUM_CLASSES {config.MODEL.NUM_CLASSES}: pass the config it was exported with.")

    def run(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of images (N, C, H, W), any N >= 1."""
        images = np.ascontiguousarray(images, dtype=self.input_dtype)
        batch = self.batch_size
        if batch is None:
            return self.session.run([self.output_name], {self.input_name: images})[0]
        outputs = []
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            n = len(chunk)
            if n < batch:
                padding = np.zeros((batch - n,) + chunk.shape[1:], dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])  # batch, C, H, W
            outputs.append(self.session.run([self.output_name], {self.input_name: chunk})[0][:n])
        return np.concatenate(outputs)  # N, classes

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) as a float32 CPU tensor, for :func:`evaluation.evaluate`."""
        return torch.from_numpy(self.run(images.detach().cpu().numpy()).astype(np.float32, copy=False))
