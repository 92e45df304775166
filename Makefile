# vidtempo: two commands do all set-up on a fresh clone:
#   make demo   install (if needed) into .venv, then run the main job on embedded data
#   make test   install (if needed), then run the offline test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
ARCH := $(shell uname -m)
# Why these pins: pip's plain `torch` pulls the newest CUDA build (several GB); the CPU-only torch wheel
# breaks PyPI's torchvision (`operator torchvision::nms does not exist`), and timm/peft/lightning need
# torchvision. torch 2.14.1 + torchvision 0.29.1 are a matching pair (CUDA build, runs on CPU); on aarch64
# the matching CPU pair is 2.9.1/0.24.1. Override with `make TORCH_SPEC="torch==X torchvision==Y"`.
ifeq ($(ARCH),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
EXTRAS ?= dev
else
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,decord,torchcodec
endif
STAMP := $(VENV)/.installed
DEMO_ARGS ?=  # e.g. make demo DEMO_ARGS="--seed 1" (vidtempo demo --help)

.PHONY: install system-deps test test-all demo bench lint format clean-runs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

# FFmpeg shared libraries for torchcodec (root, Debian/Ubuntu; a no-op when present). CI runs it (.ci/run).
system-deps:
	bash .ci/system-deps.sh

test: install
	$(PY) -m pytest -q --durations=15

test-all: install
	$(PY) -m pytest -q -m "" --durations=15

demo: install
	$(VENV)/bin/vidtempo demo $(DEMO_ARGS)

bench: install
	$(PY) benchmarks/decode.py
	$(PY) benchmarks/tokens.py
	$(PY) benchmarks/dpo_step.py
	$(PY) benchmarks/audio_step.py

lint: install
	$(VENV)/bin/ruff check vidtempo tests benchmarks

format: install
	$(VENV)/bin/ruff format vidtempo tests benchmarks

clean-runs:
	rm -rf runs demo
