# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv if missing, installs, runs the synthetic end-to-end demo
#   make test   -> creates .venv if missing, installs, runs the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Nothing may wait on a model hub or a metrics download during tests or the demo.
export HF_HUB_OFFLINE ?= 1
export HF_EVALUATE_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYDEVD_DISABLE_FILE_VALIDATION ?= 1

.PHONY: install demo test check-sync guard nbtest pytest export clean-nbs bench lab readme-figures structure

$(BIN)/.installed: settings.ini setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# papermill finds this kernel by the notebooks' kernelspec name, with the venv's python
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cxrgen)" >/dev/null
	@touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/cxrgen demo

# Fails when nbdev_export or nbdev_clean would change a tracked file (cxrgen/ and the
# notebooks must be committed exported and clean), or when git holds notebook outputs or data
# files (guard), then runs the notebook tests and pytest.
test: install check-sync guard structure nbtest pytest

# MIMIC-CXR is credentialed: no committed notebook may carry outputs, no data file may be tracked
# outside nbs/images/ (.ci/guard_data.py; the same check runs as a git pre-commit hook after
# `git config core.hooksPath .githooks`).
guard:
	@$(PYTHON) .ci/guard_data.py

check-sync: install
	@before=$$(git diff -- cxrgen nbs README.md | sha1sum; git status --porcelain -- cxrgen nbs README.md | sha1sum); \
	$(MAKE) -s export; \
	after=$$(git diff -- cxrgen nbs README.md | sha1sum; git status --porcelain -- cxrgen nbs README.md | sha1sum); \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev_export / nbdev_clean changed these files: export and clean the notebooks, then commit:"; \
	  git status --porcelain -- cxrgen nbs README.md; exit 1; fi; \
	echo "check-sync: cxrgen/ and README.md match nbs/, notebooks are clean"

nbtest: install
	@n=$$(ls nbs/[0-9]*.ipynb | wc -l); \
	if $(BIN)/nbdev_test --n_workers 2 --timing --flags "$(FLAGS)"; then \
	  echo "nbdev_test: $$n passed, 0 failed"; else echo "nbdev_test: failed"; exit 1; fi

pytest: install
	$(BIN)/python -m pytest -q tests

# cxrgen/ and README.md are generated from nbs/ (README from nbs/index.ipynb; nbdev 2's
# nbdev_readme needs Quarto, so nbconvert renders it).
export: install
	$(BIN)/nbdev_export && $(BIN)/python .ci/guard_data.py --fix && $(BIN)/nbdev_clean
	$(BIN)/jupyter nbconvert --log-level ERROR --to markdown --stdout nbs/index.ipynb > README.md.tmp && mv README.md.tmp README.md

# The README's pictures come from the demo's evaluation: refresh them after `make demo` when its figures change.
readme-figures:
	@test -f outputs/demo/eval/examples_test.png || { echo "run make demo first"; exit 1; }
	mkdir -p nbs/images
	cp outputs/demo/eval/examples_test.png nbs/images/demo_examples_test.png
	cp outputs/demo/eval/per_label_f1_test.png nbs/images/demo_per_label_f1_test.png

# The package's shape (issue 13): fails on an import cycle between parts, more than 12 cxrgen imports inside
# functions, more than 3 functions over 60 lines or a module over 700 lines.
structure:
	@$(PYTHON) .ci/structure.py --check

bench: install
	for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lab: install
	$(BIN)/jupyter lab nbs
