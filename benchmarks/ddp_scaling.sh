#!/usr/bin/env bash
# Swin-T on 1 and NPROC GPUs (default 2) under torchrun: main.py --eval (same images, metrics must match; images/s gives
# the scaling efficiency) and one epoch of swin_quant_flow.py QAT (calibration ranges must be identical on every rank),
# on the JPEGs benchmarks/data_pipeline.py writes (10 folders used as both train/ and val/), with random weights.
# Results go to $OUT (default output/ddp_scaling).
set -euo pipefail
OUT=${OUT:-output/ddp_scaling}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
PY=${PY:-python3} N=${NPROC:-2} CFG=${CFG:-configs/swin_tiny_patch4_window7_224.yaml}
JPEGS=output/bench_jpegs DATA=output/ddp_data RUN=output/ddp_run
WORKERS=${WORKERS:-$(( $(nproc) / N > 3 ? $(nproc) / N - 2 : 1 ))}
$PY -c "from benchmarks.data_pipeline import write_jpegs; write_jpegs('$JPEGS', ${NUM_FILES:-5000}, $(nproc))" 2>/dev/null
mkdir -p "$DATA" "$RUN" && ln -sfn "$(realpath $JPEGS)" "$DATA/train" && ln -sfn "$(realpath $JPEGS)" "$DATA/val"
CKPT=$RUN/random_weights.pth
$PY -c "
import torch
from config import get_config
from models import build_model
from utils import atomic_torch_save
torch.manual_seed(0)
atomic_torch_save({'model': build_model(get_config('$CFG')).state_dict()}, '$CKPT')"
for n in 1 "$N"; do
    $PY -m torch.distributed.run --standalone --nproc_per_node "$n" main.py --cfg "$CFG" --data-path $DATA --eval \
        --resume $CKPT --batch-size 128 --output $RUN --output-json "$OUT/eval_${n}.json" \
        --opts DATA.NUM_WORKERS "$WORKERS" 2>&1 | tee "$OUT/eval_${n}.log" | tail -n 1
done
for n in 1 "$N"; do
    $PY -m torch.distributed.run --standalone --nproc_per_node "$n" swin_quant_flow.py --cfg "$CFG" --resume $CKPT \
        --quantize --data-path $DATA --batch-size 64 --num-calib-batch 4 --num-finetune-epochs 1 --skip-fp32-eval \
        --output "$RUN/q$n" --output-json "$OUT/qat_${n}.json" --opts DATA.NUM_WORKERS "$WORKERS" 2>&1 | tee "$OUT/qat_${n}.log" | tail -n 3
done
$PY - "$OUT" "$N" <<'PYEOF'
import json, sys
out, n = sys.argv[1], sys.argv[2]
e1, en = (json.load(open(f"{out}/eval_{k}.json")) for k in ("1", n))
same = (e1["acc1"], e1["acc5"], e1["images"]) == (en["acc1"], en["acc5"], en["images"]) and abs(e1["loss"] - en["loss"]) < 1e-3
print(f"eval  1 GPU: {e1['images']} images, Acc@1 {e1['acc1']:.3f}, Acc@5 {e1['acc5']:.3f}, loss {e1['loss']:.5f}, {e1['images_per_s']:.0f} images/s")
print(f"eval {n} GPU: {en['images']} images, Acc@1 {en['acc1']:.3f}, Acc@5 {en['acc5']:.3f}, loss {en['loss']:.5f}, {en['images_per_s']:.0f} images/s"
      f" -> {'same metrics' if same else 'DIFFERENT'}, scaling efficiency {en['images_per_s'] / (int(n) * e1['images_per_s']):.2f}")
q1, qn = (json.load(open(f"{out}/qat_{k}.json")) for k in ("1", n))
digests = set(q1["calib_amax_digests"]) | set(qn["calib_amax_digests"])
r1, rn = q1["qat_train"][0]["images_per_s"], qn["qat_train"][0]["images_per_s"]
print(f"QAT: amax digests over 1 + {n} ranks: {len(digests)} distinct ({sorted(digests)[0][:12]}); train {r1:.0f} images/s on 1, "
      f"{rn:.0f} on {n} -> scaling efficiency {rn / (int(n) * r1):.2f}")
PYEOF
