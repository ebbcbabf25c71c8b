#!/usr/bin/env bash
# One-shot GPU check for a machine with one CUDA GPU, in under 8 minutes:
#   1. every test marked `cuda` (fp16 with loss scaling, bf16, torch.compile through Accelerate's dynamo
#      option, pinned memory / non-blocking copies, CUDA RNG state, device placement);
#   2. benchmarks/overhead.py on the GPU in bf16, pta against a plain loop and a plain Accelerate loop,
#      on the compute and the overhead workload.
# Everything goes into ONE results file (default gpu_check_results.md; argument 1 overrides it).
# It installs nothing: run it inside the README's dev install (pip install -e ".[dev]").
#
#   bash benchmarks/gpu_check.sh [results-file]
#
# Exit codes: 0 = all steps ran and passed, or no GPU was found (dry run: says so, writes the file);
# 1 = a test or a benchmark failed or a step ran out of its time (see the results file).
# GPU_CHECK_ON_CPU=1 runs every step on the CPU instead (1 round; the CUDA tests skip): a check of
# the script itself on a machine without a GPU.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RESULTS="${1:-gpu_check_results.md}"
PYTHON="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONUNBUFFERED=1
BUDGET_S=470          # stay under 8 minutes in total
start=$SECONDS
status=0

note() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
left() { echo $(( BUDGET_S - (SECONDS - start) )); }

# step NAME SECONDS COMMAND...: runs COMMAND with at most SECONDS (less if the budget is nearly
# spent), appends its output to the results file in a code block, records failures.
step() {
    local name="$1" limit="$2"; shift 2
    local remaining; remaining="$(left)"
    if (( remaining < 20 )); then
        note "### $name"; note "SKIPPED: the 8-minute budget is spent"; status=1; return
    fi
    (( limit > remaining )) && limit=$remaining
    note "### $name"
    note '```'
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >>"$RESULTS" 2>&1
    local rc=$?
    note '```'
    note "exit code $rc after $(( SECONDS - t0 )) s (limit ${limit} s)"
    note ""
    if (( rc != 0 )); then status=1; fi
}

: >"$RESULTS"
note "# pta GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
note ""
DEVICE=cuda ROUNDS=5 OPT=""
if [[ "${GPU_CHECK_ON_CPU:-0}" == 1 ]]; then
    DEVICE=cpu ROUNDS=1 OPT=":samples=1024:epochs=1"
    note "GPU_CHECK_ON_CPU=1: every step runs on the CPU (a check of this script, not of a GPU)."
elif ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    note "No CUDA GPU found (torch.cuda.is_available() is False): nothing to check on this machine."
    note "Dry run only: run this script on a machine with one CUDA GPU."
    exit 0
fi
note '```'
"$PYTHON" - >>"$RESULTS" 2>&1 <<'EOF'
import accelerate, torch
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor}, "
          f"bf16 supported: {torch.cuda.is_bf16_supported()}")
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), accelerate {accelerate.__version__}")
EOF
nvidia-smi --query-gpu=name,driver_version,utilization.gpu,memory.used --format=csv >>"$RESULTS" 2>&1 || true
note '```'
note ""

step "CUDA tests" 180 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py tests/test_cuda_perf.py tests/test_callbacks.py tests/test_state.py
runners() { local out="" r; for r in "$@"; do out+="${out:+,}$r$OPT"; done; echo "$out"; }
step "overhead workload, bf16, $DEVICE" 240 "$PYTHON" benchmarks/overhead.py --device "$DEVICE" --precision bf16 \
    --workload overhead --rounds "$ROUNDS" --runners "$(runners plain accelerate pta pta-defaults)" --timeout 60
step "compute workload, bf16, $DEVICE" 200 "$PYTHON" benchmarks/overhead.py --device "$DEVICE" --precision bf16 \
    --workload compute --rounds "$ROUNDS" --runners "$(runners plain accelerate pta)" --timeout 60

note "Total $(( SECONDS - start )) s; overall exit status $status."
exit "$status"
