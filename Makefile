# lmdbshard: three commands do everything on a fresh machine that has Python 3 and pip.
#   make convert [CONF=demo|imagenet] [ARGS="key=value ..."]   convert a dataset (default: the bundled demo)
#   make test                                                   set up and run the test suite
#   make bench [ARGS="bench.key=value ..."]                     conversion and read throughput against bare loops

PYTHON ?= python3
VENV   ?= .venv
CONF   ?= demo
ARGS   ?=
# PyTorch is only needed for the DataLoader tests; set TORCH= to skip installing it.
TORCH  ?= torch==2.13.0
# DALI=1: also install NVIDIA DALI (about 1 GB) and run its caffe reader on Datum output (tests/test_dali.py).
DALI   ?=
export DALI

PY    := $(VENV)/bin/python
STAMP := $(VENV)/.lmdbshard-installed
TEST_STAMP := $(VENV)/.lmdbshard-test-installed

.PHONY: convert test bench setup clean help

help:
	@sed -n '/^#/!q; s/^# \{0,1\}//p' Makefile

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@touch $@

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

test: $(TEST_STAMP)
	@if [ -n "$(TORCH)" ] && ! $(PY) -c "import torch" 2>/dev/null; then $(PY) -m pip install -q "$(TORCH)" \
	  || echo "note: $(TORCH) did not install; the DataLoader tests will be skipped"; fi
	@if [ -n "$(DALI)" ]; then $(PY) -m pip install -q "nvidia-dali-cuda120==2.4.0" || echo "note: DALI did not install; tests/test_dali.py will be skipped"; fi
	$(PY) -m pytest -q -p no:cacheprovider tests

setup: $(STAMP)

convert: $(STAMP)
	@$(PY) jobs/convert.py --config-name $(CONF) $(ARGS)

bench: $(STAMP)
	@$(PY) jobs/benchmark.py $(ARGS)


clean:
	rm -rf data/demo out/demo out/bench
