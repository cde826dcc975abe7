#!/usr/bin/env bash
# All of mmemo's GPU checks in one run (≤ 5 minutes on one H200), from a plain repository checkout: nothing is
# installed, only torch, torchaudio, transformers and the usual numpy/scipy/soundfile/yaml are expected.
#
#   benchmarks/gpu_check.sh            # on the GPU machine: cuda, base size
#   benchmarks/gpu_check.sh --smoke    # anywhere: cpu, tiny size, 3 steps (checks that the script itself runs)
#
# Prints: the environment, `mmemo bench train` (fast vs naive, MFU), the FLOP count of one 6 s + 20-token
# training step, a 2-process DDP smoke test (skipped with fewer than 2 GPUs) and `mmemo bench predict` on
# cuda (skipped while that command has no --device option), and the whisper-base tower's speed when models/whisper-base
# (or $MMEMO_WHISPER_BASE) holds it. JSON results go to $OUT (default: a temp folder).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python}
DEVICE=cuda SIZE=base STEPS=40 BUDGET=240
if [[ "${1:-}" == "--smoke" || "${MMEMO_GPU_CHECK_SMOKE:-0}" == "1" ]]; then
    DEVICE=cpu SIZE=tiny STEPS=3 BUDGET=300
fi
OUT=${OUT:-$(mktemp -d -t mmemo-gpu-check-XXXX)}
mkdir -p "$OUT"
failed=()
section() { printf '\n== %s\n' "$*"; }

section "environment ($(date -u +%FT%TZ), $(hostname))"
if ! "$PY" benchmarks/check_env.py; then
    echo "required packages are missing; nothing else can run"
    exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv
if [[ "$DEVICE" == cuda ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "torch sees no CUDA device; rerun with --smoke for the CPU check"
    exit 1
fi

section "mmemo bench train --device $DEVICE --size $SIZE --steps $STEPS"
timeout "$BUDGET" "$PY" -m mmemo bench train --device "$DEVICE" --size "$SIZE" --steps "$STEPS" \
    -o "$OUT/bench_train.json" || failed+=("bench train (exit $?)")

section "FLOPs of one training step, 6 s + 20 tokens ($SIZE)"
timeout 60 "$PY" benchmarks/flops_check.py --size "$SIZE" --device "$DEVICE" || failed+=("flops_check (exit $?)")

section "DDP smoke (2 processes)"
if [[ "$DEVICE" == cuda ]]; then
    gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
    if (( gpus >= 2 )); then
        timeout 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_smoke.py \
            || failed+=("DDP smoke (exit $?)")
    else
        echo "skipped: $gpus GPU(s); the DDP smoke needs 2"
    fi
else
    timeout 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_smoke.py --cpu \
        || failed+=("DDP smoke (exit $?)")
fi

section "mmemo bench predict on $DEVICE"
if "$PY" -m mmemo bench predict --help 2>/dev/null | grep -q -- "--device"; then
    timeout 120 "$PY" -m mmemo bench predict --device "$DEVICE" --size "$SIZE" --repeats 10 \
        -o "$OUT/bench_predict.json" || failed+=("bench predict (exit $?)")
else
    echo "skipped: mmemo bench predict has no --device option (it times CPU inference only)"
fi

section "whisper-base tower on $DEVICE (the pretrained recipe's pooled states per 3 s clip)"
WHISPER=${MMEMO_WHISPER_BASE:-models/whisper-base}
if [[ -f "$WHISPER/config.json" ]]; then
    timeout 120 "$PY" benchmarks/whisper_tower_speed.py --model "$WHISPER" --device "$DEVICE" \
        -o "$OUT/whisper_tower.json" || failed+=("whisper tower (exit $?)")
else
    echo "skipped: no $WHISPER (carry the folder that mmemo convert ct2-whisper wrote, or set MMEMO_WHISPER_BASE)"
fi

section "summary"
echo "results: $OUT"
if (( ${#failed[@]} )); then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all checks ran"
