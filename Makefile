# Two commands: `make reports` (set up + the main job) and `make test`. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= demo
SEEDS ?= 1
# pip's notes about local index folders it skips are noise here
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: setup data reports reference test smoke dry-run-full lab bench clean publish book book-deps browser

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "== creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e . 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import torch, torchvision.ops, timm, fastai, papermill; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| ops ok')"
	touch $@

data: setup
	$(BIN)/python -m bac synth --profile $(PROFILE)

# The main job: every notebook under the demo profile on the built-in synthetic data -> reports/
reports: data
	$(BIN)/python -m bac run --profile $(PROFILE) --seeds $(SEEDS)

# The committed reference: the main job for seeds 0, 1, 2 (seed 0 is what `make reports` reproduces), and its
# executed notebooks published small in reports/executed/ (book/publish.py)
reference: data
	$(BIN)/python -m bac run --profile $(PROFILE) --seeds 3
	$(BIN)/python book/publish.py

# The commit-time checks (.pre-commit-config.yaml: ruff, stripped notebooks, no large files or real RSNA images),
# then unit tests, the exploration notebook through nbval, and every other notebook once through the runner (smoke);
# `browser` first installs what the book's browser test needs where it can (else that test skips, saying why)
test: setup browser
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pre-commit run --all-files
	BAC_OUT_DIR=$(CURDIR)/build/test-reports $(BIN)/python -m pytest tests notebooks/01_data_exploration.ipynb --nbval-lax -p no:cacheprovider

smoke: setup
	$(BIN)/python -m bac run --profile smoke --out build/smoke

dry-run-full: setup
	$(BIN)/python -m bac run --dry-run-full --out build/dry-run-full

lab: setup
	$(BIN)/jupyter lab notebooks/

# Benchmarks (not tests): data generation and preprocessing speed; the full profile's loader per core, training
# images/s of each full model on this machine (a GPU when there is one), and the scale rehearsal -> benchmarks/results/
bench: setup
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_preprocess.py
	$(BIN)/python benchmarks/bench_loader.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/rehearse_full.py

# The readers' edition (issue 22). `make publish` after `make reference`: small, GitHub-renderable copies of the
# executed notebooks (reports/notebooks/, ignored) -> reports/executed/ (tracked; book/publish.py says what changes).
# `make book`: a static site from reports/executed/ -> build/book/index.html, offline (nbconvert, MathJax copied from
# the book extra). `make browser`: Chromium and Playwright for tests/test_book.py's browser test (root + apt-get).
publish: setup
	$(BIN)/python book/publish.py

book: book-deps
	$(BIN)/python book/build.py

book-deps: $(VENV)/.book-installed

$(VENV)/.book-installed: $(VENV)/.installed
	$(BIN)/pip install --disable-pip-version-check -q -e '.[book]' 2>&1 | $(QUIET_PIP)
	touch $@

browser: book-deps
	PIP=$(BIN)/pip bash book/install_browser.sh

clean:
	rm -rf build data/prepared
