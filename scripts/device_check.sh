#!/usr/bin/env bash
# Device check on a machine with an NVIDIA GPU: records a 30 s probe trace under a known matmul load and the
# report of what it shows. Run from the repository root; writes under $OUT (default ./out).
#   PYTHON=...          interpreter to use (default python3)
#   PROBE_SECONDS=30    how long to poll
#   PROBE_SIMULATE=1    probe one simulated GPU instead (a dry run of this script without a GPU)
set -euo pipefail

OUT="${OUT:-./out}"
PY="${PYTHON:-python3}"
SECONDS_TO_POLL="${PROBE_SECONDS:-30}"
step() { echo "== $(date +%H:%M:%S) $*"; }
trap 'echo "== FAILED at line $LINENO (exit $?)" >&2' ERR

mkdir -p "$OUT"
step "python: $($PY --version 2>&1) at $(command -v "$PY")"

missing=()
$PY -c 'import torch' 2>/dev/null || missing+=(torch)
$PY -c 'import pynvml' 2>/dev/null || missing+=(nvidia-ml-py)
if [ ${#missing[@]} -gt 0 ]; then
    step "installing what is missing into .venv-probe: ${missing[*]}"
    [ -x .venv-probe/bin/python ] || $PY -m venv --system-site-packages .venv-probe
    PY=.venv-probe/bin/python
    $PY -m pip install -q "${missing[@]}"
fi
if ! $PY -c 'import telemetry_service.cli' 2>/dev/null; then
    step "installing joulemeter's dependencies"
    $PY -m pip install -q -e .
fi
$PY -c 'import torch, pynvml; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

probe_args=(--seconds "$SECONDS_TO_POLL" --load auto --out "$OUT/h200-probe.json.gz")
if [ "${PROBE_SIMULATE:-0}" = "1" ]; then
    probe_args+=(--simulate-gpus 1)
else
    step "GPUs"
    nvidia-smi --query-gpu=index,name,driver_version,power.draw --format=csv || true  # informative only
fi

step "probe ${probe_args[*]}"
timeout $((SECONDS_TO_POLL + 200)) $PY -m telemetry_service probe "${probe_args[@]}"
step "probe-report --json > $OUT/probe-report.json"
timeout 120 $PY -m telemetry_service probe-report --json "$OUT/h200-probe.json.gz" > "$OUT/probe-report.json"
timeout 120 $PY -m telemetry_service probe-report "$OUT/h200-probe.json.gz"
step "done: $OUT/h200-probe.json.gz $OUT/probe-report.json"
