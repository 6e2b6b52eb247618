#!/usr/bin/env bash
# The GPU measurements the README quotes, in one run on a machine with one GPU and PyTorch installed:
#   1. the evaluation data pipeline (benchmarks/data_pipeline.py), CPU workers vs nvJPEG + batched GPU resize;
#   2. torchrun: 2 processes (sharing one GPU through gloo, or SWIN_DIST_BACKEND=nccl on 2 GPUs), main.py --eval
#      and QAT with the ONNX check on rank 0 (--check-onnx), against one process.
# SKIP_DATA_PIPELINE=1 runs part 2 only; datasets/digits is reused when it exists (make_digits needs scikit-learn).
# Missing Python packages are installed from wheels in .whl/ when that folder exists (a machine without internet).
# Results go to $OUT (default output/gpu_session).
set -euo pipefail
OUT=${OUT:-output/gpu_session}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1  # never NVLink multicast on shared hosts
PY=${PY:-python3}
if [ -d .whl ] && ! $PY -c "import yacs, modelopt" 2>/dev/null; then $PY -m pip install -q --no-index --no-deps .whl/*.whl; fi
nproc; lscpu | grep -E "^(Model name|Thread|Core|Socket)" || true; nvidia-smi -L || echo "no nvidia-smi"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

if [ -z "${SKIP_DATA_PIPELINE:-}" ]; then
echo "== 1. data pipeline"
$PY benchmarks/data_pipeline.py --folder output/bench_jpegs --num-files "${NUM_FILES:-5000}" --images "${IMAGES:-20000}" --workers "$(nproc)" \
    --gpu-decode --output-json "$OUT/data_pipeline.json" 2>&1 | grep -av "/s\]" | tail -n 12
fi

echo "== 2. torchrun: 2 processes (${SWIN_DIST_BACKEND:-gloo}) against one process"
CFG=configs/swin_micro_digits.yaml DATA=datasets/digits RUN=output/gpu_session_run
BACKEND=${SWIN_DIST_BACKEND:-gloo}  # gloo: 2 processes may share one GPU; nccl on a machine with 2 GPUs
$PY make_digits.py --output $DATA --exist-ok > /dev/null
$PY main.py --cfg $CFG --data-path $DATA --output $RUN --opts TRAIN.EPOCHS 3 2>&1 | tail -n 2
CKPT=$RUN/swin_micro_digits/default/ckpt_final.pth
$PY main.py --cfg $CFG --data-path $DATA --eval --resume $CKPT --output $RUN --output-json "$OUT/eval_1proc.json" \
    2>&1 | tail -n 1
SWIN_DIST_BACKEND=$BACKEND $PY -m torch.distributed.run --standalone --nproc_per_node 2 main.py --cfg $CFG \
    --data-path $DATA --eval --resume $CKPT --output $RUN --output-json "$OUT/eval_2proc.json" 2>&1 | tail -n 1
for n in 1 2; do
    SWIN_DIST_BACKEND=$BACKEND $PY -m torch.distributed.run --standalone --nproc_per_node $n swin_quant_flow.py --cfg $CFG \
        --resume $CKPT --quantize --data-path $DATA --num-finetune-epochs 1 --skip-fp32-eval --dynamic-batch --check-onnx \
        --output $RUN/q$n --output-json "$OUT/qat_${n}proc.json" 2>&1 | tail -n 6
done
$PY - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
one, two = (json.load(open(f"{out}/eval_{n}proc.json")) for n in (1, 2))
print(f"eval: 1 process {one['acc1']:.3f} on {one['images']} images, 2 processes {two['acc1']:.3f} on {two['images']}"
      f" -> {'same' if (one['acc1'], one['images']) == (two['acc1'], two['images']) else 'DIFFERENT'}")
for n in (1, 2):
    q = json.load(open(f"{out}/qat_{n}proc.json"))
    print(f"QAT {n} process(es): amax digests {sorted(set(q['calib_amax_digests']))[0][:12]} x{len(q['calib_amax_digests'])}"
          f" (distinct: {len(set(q['calib_amax_digests']))}), train {q['qat_train'][0]['images_per_s']:.0f} images/s, "
          f"rows {[(r['stage'], round(r['acc1'], 3), r['images']) for r in q['rows']]}")
PYEOF
