"""TensorRT side of the toolkit: build engines from ONNX, run them, evaluate, benchmark, inspect, compare."""
