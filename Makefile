# bnlab: `make demo` and `make test` are the two commands a fresh clone needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test
DEMO_STAMP := $(VENV)/.installed-experiments
DEMO_STEPS ?= 6000
DEMO_OUT   ?= runs/demo
# the pinned set: exact versions (a pip constraints file), so that a fresh clone computes the
# README's numbers; pyproject.toml keeps version ranges for `pip install bnlab`
PINNED     := requirements/pinned.txt
# optional: TORCH_INDEX=https://download.pytorch.org/whl/cpu fetches the CPU-only torch wheel
# (the tests' oracle; torch==2.13.0 in the pinned set matches 2.13.0+cpu as well)
TORCH_INDEX ?=

.PHONY: demo test lint bench clean venv pinned check-readme readme-numbers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml $(PINNED) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(PINNED) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e ".[test,mpi]"
	touch $(STAMP)

# the demo needs the experiments extra only (matplotlib, tqdm, Pillow); the test extra adds
# torch (the numerical oracle), onnx/onnxruntime, mpi4py + the mpich wheel, ruff and mypy
$(DEMO_STAMP): pyproject.toml $(PINNED) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(PINNED) -e ".[experiments]"
	touch $(DEMO_STAMP)

venv: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/bnlab run mnist-sigmoid --steps $(DEMO_STEPS) --out $(DEMO_OUT) --force

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src/bnlab

test: lint
	$(BIN)/python -m pytest -n 2 -q

# rewrite the pinned set from this venv (after a deliberate upgrade that passed `make test`)
pinned: $(STAMP)
	{ sed -n '/^#/p' $(PINNED); $(BIN)/python -m pip freeze --all --exclude-editable \
	  | grep -v -E '^(pip|bnlab)==' | sed -E 's/^([A-Za-z0-9_.-]+==[^+]+)\+.*/\1/'; } \
	  > $(PINNED).new && mv $(PINNED).new $(PINNED)

# the README's numbers: recompute them at the checked size and compare (check-readme), or
# recompute them and rewrite benchmarks/readme_numbers.json (readme-numbers)
check-readme: $(STAMP)
	$(BIN)/python benchmarks/check_readme.py check

readme-numbers: $(STAMP)
	$(BIN)/python benchmarks/check_readme.py regenerate

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
