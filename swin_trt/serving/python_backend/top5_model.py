"""Triton Python-backend model: logits (N, classes) -> the indices of the five largest, best first (INT64).

Copied into the repository as ``<name>_top5/1/model.py``; the last step of every ensemble. Ties keep the
lower class index first (a stable sort), as torch.topk does on CPU for distinct values.
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Top-k of a batch of logits; k is the output's dims."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.k = int(config["output"][0]["dims"][0])

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()  # N, classes
            top = np.argsort(-logits.astype(np.float32), axis=1, kind="stable")[:, :self.k].astype(np.int64)  # N, k
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, top)]))
        return responses
