# facegen: `make course` runs the course, `make test` runs the tests. Both create .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.facegen-installed
# pip on these machines prints one warning per local index folder it skips; they are noise, not errors.
PIP_NOISE := is ignored: it is neither a file nor a directory

.PHONY: install course book test unit nbval lab bench gpu-check clean distclean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing facegen and its dependencies into $(VENV) (first time: several minutes, torch is large)"
	$(PY) -m pip install -q -e '.[test,book]' 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	@touch $(STAMP)

## The course with the default profile (FACEGEN_PROFILE, else gpu/cpu by device): SynthFaces, notebooks 01..07
## executed in order (in place for `cpu`; runtimes -> docs/runtimes.json, README.md, book/intro.md), then the book.
course: install
	$(VENV)/bin/facegen course

## The Jupyter Book from the notebooks' committed outputs, warnings as errors -> book/_build/html/index.html
book: install
	$(VENV)/bin/facegen book

## Unit tests, then every notebook under nbval with the tiny `ci` profile.
test: unit nbval

unit: install
	$(PY) -m pytest tests -q

# pytest exits 5 when it collects nothing: no notebooks yet is not a failure (here, and only here).
nbval: install
	@rc=0; FACEGEN_PROFILE=ci $(PY) -m pytest --nbval -q notebooks/ -p no:cacheprovider || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "nbval: no notebooks to check yet"; else exit $$rc; fi

bench: install
	$(PY) benchmarks/bench_vqvae.py --profile cpu
	$(PY) benchmarks/bench_gpt.py --profile cpu
	$(PY) benchmarks/bench_sampling.py --profile cpu

## The gpu profile end to end on fresh SynthFaces with capped steps: per-stage time, throughput, GPT MFU against a
## bf16 matmul peak measured in the same run, peak GPU memory, and a PNG of samples (artifacts/gpu-check/). About
## 5 minutes on one H200; without CUDA it runs a tiny version (ci-sized models, a few steps) in a minute or two.
## On a machine whose Python already has torch, transformers, accelerate and datasets (a GPU box, Colab) the same is
## `python benchmarks/gpu_check.py` from the checkout, without the .venv.
gpu-check: install
	$(PY) benchmarks/gpu_check.py --out artifacts/gpu-check

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf artifacts book/_build .pytest_cache
	find data -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
