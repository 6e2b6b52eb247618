"""Sources of the Python-backend models, copied into each model repository as ``<model>/1/model.py``.

They run inside Triton's Python backend, in the server's own Python (numpy < 2, Pillow, ONNX Runtime:
requirements-triton.txt), never in this package's; only :mod:`image_preprocessing` (numpy and Pillow) is also
imported here, by the tests that hold it to the evaluation transform of swin_trt/data/transforms.py.
"""
