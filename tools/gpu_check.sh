#!/usr/bin/env bash
# `make gpu-check`: on a machine with one CUDA GPU, run the GPU-marked tests and a few-step tiny run on the GPU
# with the HF backend; aims at < 8 minutes. Such a machine may have no network and only PyTorch + transformers:
#   MCORE_WHEEL=/path/megatron_core-*.whl   installs megatron-core from a wheel brought along (--no-deps)
#   WHEELHOUSE=/path/wheels                  installs this project's other dependencies offline from there
# Figures it prints go into README "Topology" (GPU check).
set -euo pipefail
PY=${PY:-python}
cd "$(dirname "$0")/.."
start=$(date +%s)
"$PY" - <<'PYCHECK'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu-check: no CUDA device visible to torch " + torch.__version__)
print(f"gpu-check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s)")
PYCHECK
if [ -n "${MCORE_WHEEL:-}" ]; then "$PY" -m pip install -q --no-deps "$MCORE_WHEEL"; fi
if [ -n "${WHEELHOUSE:-}" ]; then "$PY" -m pip install -q --no-index --find-links "$WHEELHOUSE" -e ".[test]"; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# The GPU-marked tests (vLLM's skip themselves where vLLM is not installed), among them the colocated memory
# hand-back's: tests/unit/policy/test_offload.py (memory_allocated drops during generation) and vLLM sleep/wake.
"$PY" -m pytest -q -m gpu tests/unit -p no:cacheprovider
# A few GRPO steps of the tiny run on the GPU: one process, HF generation sharing the policy's model (colocated,
# so the optimizer state goes to host memory around every generation and comes back before each step).
"$PY" -m rlvr.cli.main steps run rl/nemo_rl/rlvr -c tiny --name gpu_check \
  cluster.gpus_per_node=1 policy.generation.backend=hf grpo.max_num_steps=3 grpo.val_period=0 grpo.val_at_start=false grpo.val_at_end=false
echo "gpu-check: done in $(( $(date +%s) - start )) s"
