#!/usr/bin/env bash
# Train recipes/default/lotus_gpu.yaml on a lent GPU machine in one device run and bring the Lotus back.
#
#   bash recipes/default/gpu_lotus.sh [KEY=VALUE ...]      (overrides go to `depthkit train`)
#
# Run from the repository root. On the project's device machine (Python 3.12 with PyTorch and accelerate, without
# diffusers or omegaconf) carry the wheels it lacks in .whl/ (checkpoints/README.md, "The LiDAR lever, prepared for a
# GPU session", has the download command); they are installed under /tmp/site. Without .whl/ the installed packages
# are used, so the script also runs on a CPU machine (with small overrides, as tests/test_gpu_lotus_script.py does).
#
# Environment: PYTHON (default python3) runs depthkit. LIMIT_S (default 450) bounds the training in seconds: if the
# limit stops it, the newest checkpoint is exported as the run's final weights (its cosine schedule unfinished;
# log.jsonl says at which step). RUN (default runs/lotus_gpu) is the run folder; a run folder with checkpoints is
# resumed. Results go to $OUT (the device tool's folder; default out_gpu/): gpu.txt (the device), train.log,
# lotus_final.tgz (the exported Lotus with its log.jsonl) and lotus_state.tgz (the newest resumable checkpoint: unpack
# it beside the run folder's final/ and add --resume to continue on any machine).
set -uo pipefail
LIMIT_S=${LIMIT_S:-450}
RUN=${RUN:-runs/lotus_gpu}
OUT=${OUT:-out_gpu}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_lotus.sh: could not install the carried wheels in .whl/" >&2; exit 2; }
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
CMD=("$PYTHON" -c 'import sys; from depthkit.cli import main; sys.exit(main())' train recipes/default/lotus_gpu.yaml
     "output.output_dir=$RUN")
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi";
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } >"$OUT/gpu.txt" 2>&1
resume=()
if compgen -G "$RUN/checkpoints/step_*" >/dev/null; then
    resume=(--resume)
fi
timeout "$LIMIT_S" "${CMD[@]}" "$@" "${resume[@]}" 2>&1 | tee "$OUT/train.log"
status=${PIPESTATUS[0]}
if [ "$status" -eq 124 ]; then  # stopped by LIMIT_S: the newest checkpoint becomes the final weights
    last=$(ls -d "$RUN"/checkpoints/step_* 2>/dev/null | sort | tail -1)
    if [ -z "$last" ]; then
        echo "gpu_lotus.sh: LIMIT_S=$LIMIT_S s ran out before the first checkpoint; nothing to export" | tee -a "$OUT/train.log"
        exit 1
    fi
    step=$((10#${last##*step_}))
    echo "gpu_lotus.sh: LIMIT_S=$LIMIT_S s ran out; exporting the checkpoint of step $step" | tee -a "$OUT/train.log"
    "${CMD[@]}" "$@" "train.max_steps=$step" --resume 2>&1 | tee -a "$OUT/train.log"
    status=${PIPESTATUS[0]}
fi
if [ "$status" -ne 0 ]; then
    echo "gpu_lotus.sh: depthkit train failed (status $status); see $OUT/train.log" >&2
    exit 1
fi
name=$(basename "$RUN")
last=$(ls -d "$RUN"/checkpoints/step_* | sort | tail -1)
tar czf "$OUT/lotus_final.tgz" -C "$(dirname "$RUN")" "$name/final" "$name/log.jsonl"
tar czf "$OUT/lotus_state.tgz" -C "$(dirname "$RUN")" "$name/checkpoints/$(basename "$last")"
ls -l "$OUT"
