#!/usr/bin/env bash
# Download the wheels that scripts/gpu_check.sh installs on an offline GPU machine.
#
#   scripts/gpu_wheels.sh DIR        # on a machine with network; then bring DIR along (about 25 MB)
#
# The GPU machine's Python 3.12 is expected to have a CUDA torch, transformers, numpy, pyyaml, regex, tqdm and
# packaging already; this folder adds fairseq (ve-fairseq, cp312 wheel) and what it lacks (sacrebleu and its
# dependencies included: fairseq imports it on import), the test runner and
# torch-cif (the benchmark's comparison). antlr4-python3-runtime (pinned by hydra-core 1.3) exists only as an sdist:
# it is built here into a pure-Python wheel. PYTHON (default python3) runs pip; any Python version works.
set -euo pipefail
DIR=${1:?usage: scripts/gpu_wheels.sh DIR}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
"$PY" -m pip download --quiet --only-binary=:all: --no-deps --dest "$DIR" \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "ve-fairseq==0.12.3" "bitarray" "editdistance" "cffi" "pycparser" "soundfile" "sacrebleu" "portalocker" \
    "tabulate" "colorama" "lxml" "hydra-core==1.3.2" "omegaconf==2.3.0" "pytest" "pluggy" "iniconfig" "torch-cif==0.2.0"
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DIR" "antlr4-python3-runtime==4.9.3"
du -sh "$DIR"
ls "$DIR"
