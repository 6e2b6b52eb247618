"""INT8/FP8 quantization with NVIDIA ModelOpt: placement table, calibration, QAT, checkpoints, Q/DQ export."""
from swin_trt.logs import route_third_party_warnings

route_third_party_warnings()  # ModelOpt warns while its modules are imported, before a command configures its log
