# Two entry points (see README):  `make book`  and  `make test`.
# Both create the virtual environment themselves, from requirements.lock, and are idempotent.
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
# torch is the one package outside the lock: installed first, by this exact version, so that the
# user's own build (CUDA, ROCm, MPS, or the CPU wheel of this course's machines) is kept.
TORCH_VERSION := 2.13.0
# The tested versions of everything else, with hashes (`make lock` writes it).
LOCK := requirements.lock
# `make lock` resolves against the CPU build of torch, so that the lock lists no CUDA packages:
# from a local wheel folder when there is one (this course's machines), else PyTorch's CPU index.
TORCH_FIND_LINKS ?= $(if $(wildcard /opt/wheels/torch-$(TORCH_VERSION)*),/opt/wheels,)
LOCK_TORCH_ARGS := $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS),--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

.PHONY: setup test unit notebooks book-check book clean sync-notebooks lock browser linkcheck set-repository

setup: $(VENV)/.installed

# 1) torch first, pinned, so nothing later pulls a multi-GB CUDA build;
# 2) everything else exactly as tested: requirements.lock, hash-checked, without re-resolving
#    (--no-deps: the lock is complete, tests/test_environment.py checks it; resolving again would
#    trip over pygpcca's stale jinja2==3.0.3 pin, which the lock overrides, see `make lock`);
# 3) tflib itself, editable.
$(VENV)/.installed: pyproject.toml .ci/overrides.txt $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "uv>=0.5"
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_ARGS)
	$(VENV)/bin/uv pip install -q --python $(PY) --require-hashes --no-deps -r $(LOCK)
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) -c "import cellrank; assert cellrank.__version__.startswith('2'), cellrank.__version__"
	touch $@

# Everything CI checks: unit tests, notebook pairing, and the book built with warnings as
# errors (tests/test_book.py), which executes every notebook once: a failing cell or assertion
# fails the build and its traceback is in the test output. One pytest run, one summary line.
# `make notebooks` runs the notebooks a second way (nbval), cell by cell, when debugging.
# COURSE_FULL_TEST=1: the browser and build-report tests must run for real (no skipping).
test: setup browser
	COURSE_FULL_TEST=1 $(PY) -m pytest tests --durations=15

unit: setup
	$(PY) -m pytest tests -m "not book"

notebooks: setup
	$(PY) -m pytest notebooks --nbval-lax

# The main job: the executed book in _build/html (cached; the cache is dropped when tflib changes).
book: setup
	$(VENV)/bin/jupyter-book build . -n -W --keep-going
	@echo "Open _build/html/index.html"

# Re-lock after changing pyproject.toml's dependencies: `make lock && make test`. The lock pins
# what .venv holds (pip freeze as constraints), adds packages that are new in pyproject.toml,
# lifts pygpcca's jinja2 pin (.ci/overrides.txt) and leaves torch out (see TORCH_VERSION).
# --universal: one lock for Linux and macOS (platform-only packages carry markers).
# To upgrade a package: `.venv/bin/uv pip install -U NAME`, then `make lock && make test`.
lock:
	test -x $(VENV)/bin/uv || { echo "make lock pins what $(VENV) holds: run make setup first"; exit 1; }
	$(PY) -m pip freeze --exclude-editable | grep -v '^#' > $(VENV)/lock-constraints.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra book --extra test --override .ci/overrides.txt \
	  -c $(VENV)/lock-constraints.txt --universal --python-version 3.11.5 $(LOCK_TORCH_ARGS) --no-emit-package torch \
	  --generate-hashes --no-annotate --custom-compile-command "make lock" -q -o $(LOCK)

# Headless Chromium for tests/test_browser.py: Debian's package, installed when missing
# (root, or sudo). Elsewhere install Chromium yourself or point COURSE_CHROMIUM at a Chrome.
browser:
	@if [ -n "$$COURSE_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 \
	    || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "tests/test_browser.py needs Chromium: install it, or set COURSE_CHROMIUM=/path/to/chrome"; exit 1; fi

# Online check of every external link of the book (needs the network; CI does not run it).
# The offline check of their syntax is tests/test_links.py.
linkcheck: setup
	$(VENV)/bin/jupyter-book build . --builder linkcheck

# The book's deployment settings (README, "Publishing the book"): the repository the buttons and
# the notebooks' install cell point at, its branch, and an optional JupyterHub (HUB= removes it).
set-repository:
	@test -n "$(REPO)" || { echo "usage: make set-repository REPO=https://github.com/OWNER/NAME [BRANCH=main] [HUB=URL]"; exit 1; }
	$(PYTHON) .ci/set_repository.py --url "$(REPO)" $(if $(BRANCH),--branch "$(BRANCH)",) $(if $(filter undefined,$(origin HUB)),,--hub "$(HUB)")

sync-notebooks: setup
	$(VENV)/bin/jupytext --sync notebooks/*.ipynb

clean:
	rm -rf _build
