#!/usr/bin/env bash
# gn_det on a GPU machine, in one run of under 10 minutes: install the project offline, run the
# device acceptance suite on CUDA (make test-device DEVICE=cuda), then the GPU benchmark
# (gn-det-benchmark gpu). Logs and results go to $OUT (at most 8 files, no subfolders).
#
# On a bare machine whose python3 already holds torch + torchvision (the lent GPU machines' image:
# Python 3.12, torch 2.11 + CUDA, and most of gn_det's dependencies) but that reaches no package
# index: carry the wheelhouse made beforehand by docs/gpu/make_wheelhouse.sh (.whl/), e.g.
#     bash docs/gpu/make_wheelhouse.sh            # here, once (PyPI reachable)
#     bash docs/gpu/run_on_gpu.sh                 # there, with .whl/ carried beside the checkout
# Setup is what `make setup` does (tools/bootstrap.py), minus its first step: bootstrap installs
# a torch pair from tools/torch-pairs.txt, which cannot be downloaded offline, so the machine's
# own torch is kept and bootstrap's other steps run as they are (detectron2 from the pinned sdist,
# gn_det editable with [dev], the import check) - the README's "your own torch" path.
#
# Dry run on a CPU machine (the suite on CPU, the benchmark's code path on tiny sizes):
#     OUT=/tmp/gpu_dry DEVICE=cpu BENCH_ARGS="--device cpu --quick --repeats 1" \
#         PY=.venv/bin/python bash docs/gpu/run_on_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-output/gpu}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
WHEELS=${WHEELS:-.whl}
BENCH_ARGS=${BENCH_ARGS:---repeats 10}
# Seconds per step, inside the device tool's 10 minutes per command: setup ~1-2 min, the suite
# ~2-3 min on a GPU, the benchmark ~2-3 min on one H100 (sized for 5).
SETUP_TIMEOUT=${SETUP_TIMEOUT:-150}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-210}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-220}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0
log() { echo "[run_on_gpu +${SECONDS}s] $*" | tee -a "$OUT/run.log"; }
step() {  # step NAME TIMEOUT LOGFILE COMMAND...: run it, log its exit status, keep going
    local name=$1 limit=$2 file=$3
    shift 3
    log "$name: $*"
    timeout "$limit" "$@" > "$OUT/$file" 2>&1
    local rc=$?
    [ "$rc" = 124 ] && log "$name: stopped after ${limit}s"
    log "$name: exit $rc (log: $file)"
    [ "$rc" = 0 ] || status=1
    return "$rc"
}

log "machine: $(uname -m), python $("$PY" -c 'import sys; print(sys.version.split()[0])')"
{
    nvidia-smi || echo "no nvidia-smi"
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'torchvision', torchvision.__version__); print('gpu', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
    "$PY" -m pip list 2>/dev/null | grep -iE '^(onnx|onnxruntime|timm|numpy|pytest) '
} > "$OUT/machine.txt" 2>&1

# 1. Setup, offline: pip reads only the wheelhouse (where the machine lacks a package).
if [ -d "$WHEELS" ]; then
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$PWD/$WHEELS" PIP_DISABLE_PIP_VERSION_CHECK=1
fi
setup() {
    "$PY" -m pip install -q pycocotools faster-coco-eval termcolor yacs iopath fvcore omegaconf \
        hydra-core antlr4-python3-runtime ruff &&
    "$PY" -c "import sys; sys.path.insert(0, 'tools'); import bootstrap as b; \
b.step('keeping the installed torch (bootstrap step 1 needs a package index)'); \
b.ensure_detectron2(); b.ensure_gn_det(); b.check()"
}
export PY
export -f setup
if ! step setup "$SETUP_TIMEOUT" setup.log bash -c setup; then
    log "setup failed: see $OUT/setup.log"
    exit 1
fi

# 2. The device acceptance suite on $DEVICE (junit XML: per-test results and recorded facts).
SUITE_ARGS="-p no:cacheprovider -rsxf --durations=15 --junitxml=$OUT/device-suite.xml"
if "$PY" -c "import xdist" 2>/dev/null && [ "$(nproc)" -ge 8 ]; then
    SUITE_ARGS="$SUITE_ARGS -n 4"
fi
if command -v make > /dev/null; then
    step device-suite "$SUITE_TIMEOUT" device-suite.log \
        make -o setup test-device DEVICE="$DEVICE" PY="$PY" PYTEST_ARGS="$SUITE_ARGS"
else  # what `make test-device` runs
    step device-suite "$SUITE_TIMEOUT" device-suite.log \
        "$PY" -m pytest tests/device -m device --device "$DEVICE" $SUITE_ARGS
fi
tail -n 25 "$OUT/device-suite.log" | tee -a "$OUT/run.log"

# 3. The GPU benchmark (JSON and the Markdown tables of docs/PERFORMANCE.md's GPU section).
# shellcheck disable=SC2086
step benchmark "$BENCH_TIMEOUT" benchmark.log \
    "$PY" -m gn_det.commands.benchmark gpu $BENCH_ARGS --json "$OUT/gpu.json"
sed -n '/^Training on /,/^Paired time ratios/p' "$OUT/benchmark.log" | tee -a "$OUT/run.log"

log "done: exit $status; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$status"
