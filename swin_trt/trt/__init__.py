"""TensorRT: backends, builds, engines, precision plans, comparisons."""
