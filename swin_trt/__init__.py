"""Swin Transformer → ONNX → TensorRT: the library behind the commands (main.py, export.py, swin_quant_flow.py, trt/...).

Nothing in this package imports a command or a benchmark script.
"""
