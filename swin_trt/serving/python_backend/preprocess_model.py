"""Triton Python-backend model: encoded images (TYPE_STRING, one per batch row) -> the classifier's input tensor.

Copied into the repository as ``<name>_preprocess/1/model.py`` beside ``image_preprocessing.py``; the
preprocessing contract comes from this model's ``config.pbtxt`` parameter ``swin_trt.preprocessing``, so the
served crop is the one the ONNX file records. An image that cannot be decoded fails its own request with the
reason; the other requests of the batch are answered.
"""
import json

import triton_python_backend_utils as pb_utils
from image_preprocessing import preprocess_batch

CONTRACT_PARAMETER = "swin_trt.preprocessing"


class TritonPythonModel:
    """Preprocessing for one classifier's contract."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.contract = json.loads(config["parameters"][CONTRACT_PARAMETER]["string_value"])
        self.input_name = config["input"][0]["name"]
        output = config["output"][0]
        self.output_name = output["name"]
        self.output_dtype = pb_utils.triton_string_to_numpy(output["data_type"])
        expected = [int(d) for d in self.contract["input_size"]]
        if [int(d) for d in output["dims"]] != expected:
            raise ValueError(f"config.pbtxt declares output {self.output_name} with dims {output['dims']} but the "
                             f"preprocessing contract makes images {expected}: write the repository again")

    def execute(self, requests):
        responses = []
        for request in requests:
            encoded = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()  # N, 1 of bytes
            try:
                pixels = preprocess_batch([row[0] for row in encoded], self.contract)  # N, 3, H, W
            except ValueError as err:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
                continue
            tensor = pb_utils.Tensor(self.output_name, pixels.astype(self.output_dtype, copy=False))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
