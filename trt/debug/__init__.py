"""Layer-by-layer comparisons of ONNX Runtime and TensorRT (polygraphy), with a tolerance report."""
