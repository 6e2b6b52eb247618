"""ONNX side of the toolkit: export, FP16 conversion, checks against ONNX Runtime, graph statistics."""
