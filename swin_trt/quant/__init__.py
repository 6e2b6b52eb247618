"""INT8/FP8 quantization with NVIDIA ModelOpt: placement table, calibration, QAT, checkpoints, Q/DQ export."""
