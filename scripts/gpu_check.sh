#!/usr/bin/env bash
# GPU check: CUDA training in fp16/bf16, the teacher and its cache on the GPU, evaluation, and the benchmarks.
#
#   scripts/gpu_check.sh OUTDIR [WHEELS]      # about 7 minutes on one GPU; needs no network
#
# WHEELS (default: $GPU_WHEELS, else ./wheels) is a folder made by scripts/gpu_wheels.sh on a machine with network;
# its wheels are installed with pip --no-index into a private folder (GPU_SITE, default /tmp/fairseq_kt_gpu_site),
# never into the system's site-packages. Skipped when the folder does not exist (fairseq already installed).
# Writes OUTDIR/gpu_check.log (everything printed), OUTDIR/pytest_gpu.xml, OUTDIR/bench_cuda.json and
# OUTDIR/gpu_check.json (versions, GPU, each step's status and seconds, test counts, benchmark targets and the
# throughput line). Exit status: 0 when every step passed.
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR [WHEELS]}
WHEELS=${2:-${GPU_WHEELS:-wheels}}
PY=${PYTHON:-python3}
SITE=${GPU_SITE:-/tmp/fairseq_kt_gpu_site}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee "$OUT/gpu_check.log") 2>&1
cd "$ROOT"
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
STEPS="$OUT/steps.tsv"
: > "$STEPS"

step() {  # step NAME TIMEOUT_S COMMAND...: run, time, record "name<TAB>status<TAB>seconds"
    local name=$1 limit=$2 start rc
    shift 2
    echo "=== $name: $*"
    start=$(date +%s)
    timeout "$limit" "$@"
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >> "$STEPS"
    echo "=== $name: exit $rc after $(($(date +%s) - start)) s"
}

if [ -d "$WHEELS" ]; then
    step install 120 "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
fi
# fairseq imports scikit-learn on import, for its text-classification tasks only (never run here); where it is
# missing, a stub that raises on use keeps its 50 MB (with scipy) out of the wheel folder
if ! "$PY" -c "import sklearn.metrics" 2>/dev/null; then
    mkdir -p "$SITE/sklearn"
    printf 'def _unavailable(*args, **kwargs):\n    raise ImportError("scikit-learn is not installed")\n\n' \
        > "$SITE/sklearn/metrics.py"
    printf 'f1_score = matthews_corrcoef = _unavailable\n' >> "$SITE/sklearn/metrics.py"
    printf 'from sklearn import metrics  # noqa: F401\n' > "$SITE/sklearn/__init__.py"
fi
step environment 120 "$PY" -c "
import torch, transformers, fairseq, soundfile
import fairseq_kt
assert torch.cuda.is_available(), 'CUDA is not available'
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))
print('transformers', transformers.__version__, 'fairseq', fairseq.__version__)
"
step pytest_gpu 300 "$PY" -m pytest -q -rs -m gpu tests/test_gpu.py -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml"
step bench 300 "$PY" -m fairseq_kt.cli.bench --device cuda --json "$OUT/bench_cuda.json" \
    --work-dir "${GPU_BENCH_WORK:-/tmp/fairseq_kt_gpu_bench}"

"$PY" - "$OUT" <<'PYEOF'
import json, platform, subprocess, sys, xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
summary = {"python": platform.python_version(), "steps": {}}
for line in (out / "steps.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    summary["steps"][name] = {"exit": int(rc), "seconds": int(seconds)}
try:
    import torch
    summary["torch"] = torch.__version__
    summary["cuda"] = torch.version.cuda
    summary["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as err:  # report what is known
    summary["torch_error"] = repr(err)
try:
    summary["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=30,
    ).stdout.strip()
except (OSError, subprocess.SubprocessError):
    summary["nvidia_smi"] = None
if (out / "pytest_gpu.xml").exists():
    suite = ET.parse(out / "pytest_gpu.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    summary["pytest_gpu"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
if (out / "bench_cuda.json").exists():
    bench = json.loads((out / "bench_cuda.json").read_text())
    summary["bench"] = {"targets": bench.get("targets"), "throughput": bench.get("throughput"),
                        "seconds": bench.get("seconds")}
summary["passed"] = all(s["exit"] == 0 for s in summary["steps"].values())
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
sys.exit(0 if summary["passed"] else 1)
PYEOF
