# The two commands: `make demo` and `make test`. Both set everything up from scratch, offline.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# The CPU build of torch lies on this machine's disk; install it first so nothing pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# onnx + onnxruntime (the [onnx] extra, ~15 s from the registry): the ONNX export parity tests run, not skip
	$(BIN)/python -m pip install --quiet -e '.[test,onnx]'
	touch $(STAMP)

demo: setup
	$(BIN)/skiplab demo

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build src/*.egg-info
