#!/usr/bin/env bash
# The prepared run for a lent GPU (one call of the device tool). Stages, in the order given
# (default: all, about 8 minutes on an H200):
#   invariance  votes with batch sizes 1/4/8 on the GPU, run to run, against CPU counts (tiny model),
#               and in strict mode at 512 px (SD v1.4's architecture)
#   diagnose    which operations are batch-variant on the GPU; strict mode's effect and cost
#   multiconcept  only when named (gpu_session.sh multiconcept): bench_multiconcept, the batched A&E
#               vs diffusers' pipeline one image at a time (tiny model, 128 px, A&E's full schedule)
#   bench       bench_hrv on the tiny model and on SD v1.4's full-size architecture (random
#               weights, float16, 512 px, 50 steps), the vote timed with CUDA events
#   editing     bench_editing: P2P-HRV batched vs one pair at a time, its cost over P2P, and the
#               baselines' pairs/s (SDEdit 0.5/0.7, PnP, MasaCtrl, FPE) beside P2P (tiny model
#               and SD v1.4's architecture at 512 px, 50 steps)
#   bgdino      bench_bgdino: BG-DINO pairs/s batched vs one pair at a time, tiny random models
#               built there, 512 px images (needs transformers 5.x: carry its wheel in .whl/ if older)
# Before the call, here: results/gpu_ref/tiny_cpu.npz from
#   python benchmarks/check_invariance.py --prompts 8 --batch-sizes 1,4 --out results/gpu_ref/tiny_cpu.npz
# the tiny model folder (resources/models/tiny), and wheels of the diffusers version this project
# uses in .whl/ (the GPU image has no diffusers and no open_clip); carry all three.
set -uo pipefail
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
step() {
    local limit=$1
    shift
    echo "== $* (limit ${limit} s)"
    timeout "$limit" python3 "$@" 2>&1 | grep -v -e "Loading" -e "should be kept in float32"
}
invariance() {
    step 120 benchmarks/check_invariance.py --device cuda --prompts 8 --batch-sizes 1,4,8 --repeat \
        --out "$OUT/tiny_cuda.npz" --compare results/gpu_ref/tiny_cpu.npz
    step 120 benchmarks/check_invariance.py --arch sd14 --device cuda --dtype float16 --size 256 --steps 10 \
        --prompts 4 --batch-sizes 1,2,4 --repeat
    # strict mode where the vote's own product was batch-variant (4096 pixels per layer at 512 px)
    step 120 benchmarks/check_invariance.py --arch sd14 --device cuda --dtype float16 --size 512 --steps 4 \
        --prompts 3 --batch-sizes 1,3 --batch-invariant strict
}
diagnose() {
    step 60 benchmarks/diagnose_gpu_invariance.py --size 128 --prompts 8 --time-size 0
    step 150 benchmarks/diagnose_gpu_invariance.py --arch sd14 --dtype float16 --size 256 --prompts 4
}
bench() {
    step 60 benchmarks/bench_hrv.py --device cuda --prompts 16 --batch-size 8 --pairs 4
    step 170 benchmarks/bench_hrv.py --arch sd14 --device cuda --dtype float16 --size 512 --steps 50 \
        --prompts 16 --batch-size 8 --naive-prompts 2 --repeats 1 --pairs 5
}
multiconcept() {
    step 240 benchmarks/bench_multiconcept.py --device cuda --size 128 --images 8 --single
}
editing() {
    step 90 benchmarks/bench_editing.py --device cuda --pairs 4 --seeds 4 --batch-size 8
    step 300 benchmarks/bench_editing.py --arch sd14 --device cuda --dtype float16 --size 512 --steps 50 \
        --pairs 2 --seeds 4 --batch-size 4 --repeats 1 --skip-one-at-a-time
}
bgdino() {
    step 90 benchmarks/bench_bgdino.py --device cuda --size 512 --pairs 64 --batch-size 16
}
for stage in "${@:-invariance diagnose bench editing bgdino}"; do
    for s in $stage; do "$s"; done
done 2>&1 | tee "$OUT/log.txt"
