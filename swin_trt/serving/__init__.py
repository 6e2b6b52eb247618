"""Serving on NVIDIA Triton Inference Server: the model repository, the bundled local server and the client.

- ``model_config``: Triton's ``ModelConfig`` messages (its own protobuf schema, from tritonclient), written as
  ``config.pbtxt`` and read back strictly.
- ``repository``: an ONNX file (and its engine) -> a model repository (trt/triton_repository.py).
- ``python_backend/``: sources of the Python-backend models, copied into the repository (they run inside the
  server's Python, never in this package's).
- ``server``: the tritonserver that the PyPI wheel ``nvidia-pytriton`` bundles, run from its own environment on
  127.0.0.1 (trt/serve_triton.py, the tests, the benchmark).
- ``client`` and ``evaluate``: a served classifier's accuracy over an image folder (trt/eval_triton.py).
"""
