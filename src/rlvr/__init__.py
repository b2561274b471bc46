"""rlvr: reinforcement learning with verifiable rewards (GRPO) as a declarative step graph.

The package is the engine: every stage of the workflow is a plain function here that knows nothing of
Snakemake. The Snakefile and the ``nemotron`` CLI only wire these functions together.
"""

__version__ = "0.1.0"
