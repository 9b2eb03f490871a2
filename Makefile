# bio-post: `make demo` and `make test` are the two set-up commands a newcomer needs.
# Both create .venv on first use, installing EXACT versions from constraints/$(STACK).txt
# (README "Environments"):
#   STACK=cpu  (default) this machine and CI: the CPU wheel of torch 2.13.0
#   STACK=gpu  the GPU image: torch 2.11.0 (CUDA), transformers 5.17.0, ...
#   PIN=ranges install from the ranges of requirements*.txt instead (the newest that fit);
#              best into a venv of its own: `make test PIN=ranges VENV=.venv-ranges`
# TORCH_SPEC picks the torch build (default: the one of the stack); torch goes in first because an
# unpinned torch would pull a multi-GB CUDA build. VENV= can point at an existing environment.
PYTHON      ?= python3
VENV        ?= .venv
STACK       ?= cpu
PIN         ?= constraints
TORCH_SPEC_cpu := torch==2.13.0
TORCH_SPEC_gpu := torch==2.11.0
TORCH_SPEC  ?= $(TORCH_SPEC_$(STACK))
# Optional extras of BioReason installed by default, so that their tests run in CI (evo2: the Evo2
# encoder, docs/evo2.md; its packages are pinned in constraints/*.txt too). Empty: the core only.
BIOREASON_EXTRAS ?= evo2
# Extra install steps: requirements files installed after the main set with --no-deps (packages
# whose declared dependencies must not be resolved, e.g. an optional encoder), under the same
# constraints. One file per extra; add it here, pin its packages in constraints/*.txt (or run
# scripts/refresh_constraints.sh, which installs through this Makefile).
NODEPS_REQUIREMENTS ?= BioReason-Pro/requirements-esm.txt
# More arguments for every pip install, e.g. PIP_ARGS='--extra-index-url URL' or '-c more_pins.txt'.
PIP_ARGS    ?=
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.biopost-installed
WORK_ROOT   ?= runs/demo
PYTEST_ARGS ?=

CONSTRAINTS := constraints/$(STACK).txt
ifeq ($(PIN),constraints)
PIP_C       := -c $(CONSTRAINTS)
PIN_FILES   := $(CONSTRAINTS)
else ifeq ($(PIN),ranges)
PIP_C       :=
PIN_FILES   :=
else
$(error PIN must be "constraints" (the default) or "ranges", not "$(PIN)")
endif
ifeq ($(TORCH_SPEC),)
$(error no TORCH_SPEC for STACK=$(STACK): use STACK=cpu or STACK=gpu, or set TORCH_SPEC)
endif
ifeq ($(PIN),constraints)
ifeq ($(wildcard $(CONSTRAINTS)),)
$(error $(CONSTRAINTS) does not exist (STACK=$(STACK)); use STACK=cpu or STACK=gpu)
endif
endif

# The stamp records how the environment was installed (read by tests/test_constraints.py); a
# different STACK / PIN / TORCH_SPEC / BIOREASON_EXTRAS / NODEPS_REQUIREMENTS than the recorded one
# reinstalls.
STAMP_TEXT  := stack=$(STACK) pin=$(PIN) torch=$(TORCH_SPEC) extras=$(strip $(BIOREASON_EXTRAS)) \
               nodeps=$(strip $(NODEPS_REQUIREMENTS))
ifneq "$(shell cat $(STAMP) 2>/dev/null)" "$(STAMP_TEXT)"
STAMP_FORCE := FORCE
endif

.PHONY: help venv test demo clean-demo FORCE

help:
	@echo "make demo   create .venv, run sweeps/demo.yaml locally, write figures/results_id_ood.md"
	@echo "make test   create .venv, run the test suite (what CI runs)"
	@echo "  STACK=cpu|gpu (constraints/STACK.txt, default cpu)  PIN=ranges (install from ranges)"

$(STAMP): requirements.txt requirements-test.txt pyproject.toml BioReason/pyproject.toml BioReason-Pro/pyproject.toml \
          $(PIN_FILES) $(NODEPS_REQUIREMENTS) $(STAMP_FORCE)
	rm -f $(STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_C) $(PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q $(PIP_C) $(PIP_ARGS) "$(TORCH_SPEC)" -r requirements-test.txt \
	    -e . -e "./BioReason$(if $(strip $(BIOREASON_EXTRAS)),[$(strip $(BIOREASON_EXTRAS))])" -e ./BioReason-Pro
	$(foreach f,$(NODEPS_REQUIREMENTS),$(PY) -m pip install -q --no-deps $(PIP_C) $(PIP_ARGS) -r $(f) &&) true
	echo "$(STAMP_TEXT)" > $(STAMP)

FORCE:

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=25 $(PYTEST_ARGS)

demo: $(STAMP)
	BIOPOST_WORK_ROOT=$(WORK_ROOT) $(VENV)/bin/biopost sweep submit sweeps/demo.yaml --executor local
	test -f data/go_synth/synth_go.json || $(VENV)/bin/biopost data synth-go --out data/go_synth
	BIOPOST_WORK_ROOT=$(WORK_ROOT) $(VENV)/bin/biopost sweep submit sweeps/demo_protein.yaml --executor local
	$(PY) harvest_results.py --root $(WORK_ROOT) --out figures --spec sweeps/demo.yaml --spec sweeps/demo_protein.yaml

clean-demo:
	rm -rf $(WORK_ROOT)
