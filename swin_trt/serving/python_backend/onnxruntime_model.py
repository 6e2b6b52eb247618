"""Triton Python-backend model: an ONNX classifier run by ONNX Runtime's CPU provider, one session per instance.

Copied into the repository as ``<name>_python/1/model.py`` beside ``model.onnx``. It serves the classifier
where the server has only the Python backend (the tritonserver that nvidia-pytriton bundles). The requests of a
dynamic batch run as one ``session.run``. Q/DQ graphs run as written (``session.disable_quant_qdq``), as the
project's own predictor runs them (swin_trt/onnx_tools/runtime.py), so the served logits are the ones
trt/eval_onnxrt.py computes. Loading fails, with the reason, when the ONNX file's inputs or outputs are not the
ones config.pbtxt declares.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _declared(tensors):
    return {t["name"]: [int(d) for d in t["dims"]] for t in tensors}


def _in_file(values, batched):
    """name -> dims of an ONNX Runtime input/output list, without the batch dimension when the model batches."""
    found = {}
    for value in values:
        dims = [d if isinstance(d, int) else -1 for d in value.shape]
        found[value.name] = dims[1:] if batched else dims
    return found


class TritonPythonModel:
    """One ONNX Runtime session over ``model.onnx``."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_threads", "0"))
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        batched = int(config.get("max_batch_size", 0)) > 0
        for kind, declared, in_file in (("inputs", _declared(config["input"]), _in_file(self.session.get_inputs(), batched)),
                                        ("outputs", _declared(config["output"]), _in_file(self.session.get_outputs(), batched))):
            if declared != in_file:
                raise ValueError(f"model.onnx has {kind} {in_file} but config.pbtxt declares {declared}: "
                                 "write the repository again with trt/triton_repository.py")
        self.inputs = [(t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        arrays = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                  for name, _ in self.inputs}
        sizes = [len(a) for a in arrays[self.inputs[0][0]]]
        feed = {name: np.concatenate(arrays[name]).astype(dtype, copy=False) for name, dtype in self.inputs}  # sum(N), ...
        results = self.session.run(self.outputs, feed)
        responses = []
        start = 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(result[start:start + size]))
                       for name, result in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
