#!/usr/bin/env bash
# Train recipes/default/lotus_gpu.yaml on a lent GPU machine in one device run and bring the Lotus back.
#
#   bash recipes/default/gpu_lotus.sh [KEY=VALUE ...]      (overrides go to `depthkit train`; the run folder is RUN)
#
# Run from the repository root. On the project's device machine (Python 3.12 with PyTorch and accelerate, without
# diffusers or omegaconf) carry the wheels it lacks in .whl/ (checkpoints/README.md, "The LiDAR lever, prepared for a
# GPU session", has the download command); they are installed under SITE. Without wheels the installed packages are
# used, so the script also runs on a CPU machine (with small overrides, as tests/test_gpu_lotus_script.py does).
#
# Environment (defaults in brackets):
#   PYTHON [python3]        the interpreter that runs depthkit
#   LIMIT_S [330]           seconds the training may take; then it is stopped (SIGTERM, SIGKILL 30 s later) and the
#                           newest checkpoint (every 250 steps, validated at each) is exported as the final weights,
#                           its cosine schedule unfinished (log.jsonl says at which step)
#   RUN [runs/lotus_gpu]    the run folder; one that holds checkpoints is resumed (a second call on a still-warm
#                           device machine, or this machine with lotus_state.tgz unpacked, continues the run)
#   OUT [out_gpu]           where the results go (the device tool's folder): gpu.txt (the device), train.log,
#                           lotus_state.tgz (the newest resumable checkpoint, packed as soon as there is one) and
#                           lotus_final.tgz (the exported Lotus with its log.jsonl)
#   WHEELS [.whl], SITE [/tmp/site]   the carried wheels and where they are installed
# Exit status: 0 with both archives; 3 when only the state came back (the training was stopped before a checkpoint
# could be exported, e.g. in its VAE-only phase); 1 when nothing did; 2 on a bad call or wheels that do not install.
set -uo pipefail
LIMIT_S=${LIMIT_S:-330}
RUN=${RUN:-runs/lotus_gpu}
OUT=${OUT:-out_gpu}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
for arg in "$@"; do
    case "$arg" in
        output.output_dir=*) echo "gpu_lotus.sh: set the run folder with RUN=..., not $arg" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/*.whl || { echo "gpu_lotus.sh: could not install the carried wheels in $WHEELS/" >&2; exit 2; }
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
CMD=("$PYTHON" -c 'import sys; from depthkit.cli import main; sys.exit(main())' train recipes/default/lotus_gpu.yaml
     "output.output_dir=$RUN")
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi";
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } >"$OUT/gpu.txt" 2>&1
newest() { ls -d "$RUN"/checkpoints/step_* 2>/dev/null | sort | tail -1; }
pack() {  # archive NAME, then paths relative to RUN's parent
    local name=$1; shift
    tar czf "$OUT/$name" -C "$(dirname "$RUN")" "$@" \
        || { echo "gpu_lotus.sh: could not pack $OUT/$name" | tee -a "$OUT/train.log" >&2; return 1; }
}
run_name=$(basename "$RUN")
resume=()
if [ -n "$(newest)" ]; then
    resume=(--resume)
fi
timeout -k 30 "$LIMIT_S" "${CMD[@]}" "$@" "${resume[@]}" 2>&1 | tee "$OUT/train.log"
status=${PIPESTATUS[0]}
last=$(newest)
if [ -n "$last" ]; then
    pack lotus_state.tgz "$run_name/checkpoints/$(basename "$last")" || exit 1
fi
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then  # stopped by LIMIT_S: export the newest checkpoint
    if [ -z "$last" ]; then
        echo "gpu_lotus.sh: LIMIT_S=$LIMIT_S s ran out before the first checkpoint; nothing to export" | tee -a "$OUT/train.log"
        exit 1
    fi
    step=$((10#${last##*step_}))
    echo "gpu_lotus.sh: LIMIT_S=$LIMIT_S s ran out; exporting the checkpoint of step $step" | tee -a "$OUT/train.log"
    "${CMD[@]}" "$@" "train.max_steps=$step" --resume 2>&1 | tee -a "$OUT/train.log"
    if [ "${PIPESTATUS[0]}" -ne 0 ]; then
        echo "gpu_lotus.sh: the checkpoint of step $step could not be exported (stopped in the VAE-only phase?); only" \
             "lotus_state.tgz came back: resume it for longer" | tee -a "$OUT/train.log" >&2
        exit 3
    fi
elif [ "$status" -ne 0 ]; then
    echo "gpu_lotus.sh: depthkit train failed (status $status); see $OUT/train.log" >&2
    if [ -n "$last" ]; then exit 3; else exit 1; fi
fi
pack lotus_final.tgz "$run_name/final" "$run_name/log.jsonl" || exit 1
ls -l "$OUT"
