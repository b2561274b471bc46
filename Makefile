# Two commands for a fresh machine: `make run` (set up .venv and run the tiny end-to-end job) and `make test`.
# Both are idempotent: the set-up re-runs only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU build on CPU machines (a wheel of it is on disk here); GPU machines set TORCH_SPEC to their build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= megatron,distributed,slurm,lepton,test,tracking

.PHONY: setup run test test-learning lint dry-run gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

run: setup
	$(VENV)/bin/nemotron steps run rl/nemo_rl/rlvr -c tiny

dry-run: setup
	$(VENV)/bin/nemotron steps run rl/nemo_rl/rlvr -c tiny --dry-run

# Two pytest-xdist workers, one per core (most test time is single-threaded process start-up), a test module per
# work unit and the modules of one shared session fixture on one worker (tests/parallel.py). The 25 slowest tests are
# listed at the end, so that their cost stays in view.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadscope --durations=25

# Code style and workflow lints, before the tests in CI (.ci/run): ruff's formatter and linter (config in
# pyproject.toml), then `snakemake --lint`, whose one remaining lint is explained in the Snakefile (the test
# accepts exactly that one).
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests/workflow/test_lint_and_graphs.py -k lint

# Three whole tiny runs, each checked for its learning goal: one process, two CPU ranks (cluster.num_workers=2) and
# custom rewards (about 5-6 minutes each on two idle cores for one process; the two-rank run takes longer).
test-learning: setup
	$(PY) -m pytest -q -m learning

# On a machine with one CUDA GPU: the GPU-marked tests and a few-step tiny run on it (tools/gpu_check.sh).
gpu-check:
	tools/gpu_check.sh

clean:
	rm -rf results .snakemake
