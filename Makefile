# Two entry points (see README):  `make book`  and  `make test`.
# Both create the virtual environment themselves and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# The offline dataset mirror: CI and this course's machines keep the real files in ../shared/data.
# Users without it get the pinned downloads (checksummed) into their cache instead.
TFLIB_DATA_MIRROR ?= $(if $(wildcard ../shared/data/MANIFEST.md),$(abspath ../shared/data),)
export TFLIB_DATA_MIRROR
# Keep BLAS from oversubscribing the 2 cores the course targets.
export OMP_NUM_THREADS ?= 2
export PYTHONHASHSEED ?= 0
# Optional: a wheel index for CPU-only torch on a user's machine, e.g.
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: setup test unit notebooks book-check book clean sync-notebooks

setup: $(VENV)/.installed

# 1) torch first, pinned, so nothing later pulls a multi-GB CUDA build;
# 2) everything else with uv and an override that lifts pygpcca's stale jinja2==3.0.3 pin,
#    which otherwise makes pip fall back to CellRank 1.5.1 beside Jupyter Book 1.
$(VENV)/.installed: pyproject.toml .ci/overrides.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "uv>=0.5"
	$(PY) -m pip install -q "torch==2.13.0" $(TORCH_ARGS)
	$(VENV)/bin/uv pip install -q --python $(PY) --override .ci/overrides.txt -e ".[book,test]" "torch==2.13.0"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) -c "import cellrank; assert cellrank.__version__.startswith('2'), cellrank.__version__"
	touch $@

# Everything CI checks: unit tests, notebook pairing, and the book built with warnings as
# errors (tests/test_book.py), which executes every notebook once: a failing cell or assertion
# fails the build and its traceback is in the test output. One pytest run, one summary line.
# `make notebooks` runs the notebooks a second way (nbval), cell by cell, when debugging.
test: setup
	$(PY) -m pytest tests --durations=15

unit: setup
	$(PY) -m pytest tests -m "not book"

notebooks: setup
	$(PY) -m pytest notebooks --nbval-lax

# The main job: the executed book in _build/html (cached; the cache is dropped when tflib changes).
book: setup
	$(VENV)/bin/jupyter-book build . -n -W --keep-going
	@echo "Open _build/html/index.html"

sync-notebooks: setup
	$(VENV)/bin/jupytext --sync notebooks/*.ipynb

clean:
	rm -rf _build
