# bio-post: `make demo` and `make test` are the two set-up commands a newcomer needs.
# Both create .venv on first use. TORCH_SPEC picks the torch build: the default is the
# CPU wheel (an unpinned torch would pull a multi-GB CUDA build); on a GPU machine use
# e.g. `make demo TORCH_SPEC='torch==2.11.0'` or an existing environment via VENV=.
PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.biopost-installed
WORK_ROOT   ?= runs/demo
PYTEST_ARGS ?=

.PHONY: help venv test demo clean-demo

help:
	@echo "make demo   create .venv, run sweeps/demo.yaml locally, write figures/results_id_ood.md"
	@echo "make test   create .venv, run the test suite (what CI runs)"

$(STAMP): requirements.txt requirements-test.txt pyproject.toml BioReason/pyproject.toml BioReason-Pro/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements-test.txt -e . -e ./BioReason -e ./BioReason-Pro
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

demo: $(STAMP)
	BIOPOST_WORK_ROOT=$(WORK_ROOT) $(VENV)/bin/biopost sweep submit sweeps/demo.yaml --executor local
	$(PY) harvest_results.py --root $(WORK_ROOT) --out figures --spec sweeps/demo.yaml

clean-demo:
	rm -rf $(WORK_ROOT)
