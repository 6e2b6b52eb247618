#!/usr/bin/env bash
# Out of GPU memory for real, on a machine with one GPU: each command must end with one sentence naming its batch size,
# what it asked for, what the GPU has and the flag to lower (exit code 2), and the benchmark must keep its measured cell.
#   1. trt/benchmark.py, Swin-T eager FP16 at batch 64 and 262,144 (the input alone is 147 GiB);
#   2. main.py --eval, Swin-L 384 (random weights) in FP32 at batch 4,000;
#   3. swin_quant_flow.py --quantize, the same model calibrated at batch 4,000.
# The images are 4,000 random 32x32 PNGs per split (resized to 384 by the config), written by this script.
set -uo pipefail
PY=${PY:-python3}
DATA=${DATA:-output/oom_data}
nvidia-smi -L || true
$PY - "$DATA" <<'PYEOF'
import os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
rng = np.random.default_rng(0)
for split, per_class in (("val", 400), ("train", 400)):
    for c in range(10):
        folder = os.path.join(root, split, str(c))
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.png"))
PYEOF
CFG=configs/swin_large_patch4_window12_384.yaml
$PY -c "import torch; from swin_trt.config import get_config; from swin_trt.models import build_model; \
torch.save({'model': build_model(get_config('$CFG')).state_dict()}, '$DATA/swin_l_384_random.pth')"
echo "== 1. benchmark"; $PY trt/benchmark.py --cfg configs/swin_tiny_patch4_window7_224.yaml --backends eager \
    --precisions fp16 --batch-sizes 64 262144 --warmup 3 --iters 10 --repeats 3; echo "exit code $?"
echo "== 2. main.py --eval"; $PY main.py --eval --cfg $CFG --resume $DATA/swin_l_384_random.pth --data-path $DATA \
    --batch-size 4000 --disable-amp --num-workers 8 --output output/oom_run --opts MODEL.NUM_CLASSES 1000 2>&1 | tail -n 2
echo "exit code ${PIPESTATUS[0]}"
echo "== 3. swin_quant_flow.py --quantize"; $PY swin_quant_flow.py --cfg $CFG --resume $DATA/swin_l_384_random.pth \
    --data-path $DATA --quantize --ptq-only --skip-fp32-eval --batch-size 4000 --num-calib-batch 1 --num-workers 8 \
    --high-precision fp32 --output output/oom_run 2>&1 | tail -n 2
echo "exit code ${PIPESTATUS[0]}"
