"""Launching runs on an executor: profiles, Slurm submission, container squashing and the Ray launcher.

* :mod:`rlvr.launch.profile` reads a profile folder: Snakemake's options (``config.yaml``) and the launch
  settings that ``nemotron steps run`` itself needs (``launch.yaml``: controller job, container image, squash).
* :mod:`rlvr.launch.slurm` prepares a Slurm run (guards against the two traps that hang or break the Snakemake
  Slurm plugin, the rlvr topology check against the profile) and submits the detached controller job.
* :mod:`rlvr.launch.squash` turns a container image into a reusable ``.sqsh`` file with ``enroot import``.
* :mod:`rlvr.launch.topology` checks that a Slurm allocation matches ``cluster.*``.
* :mod:`rlvr.launch.ray_slurm` is the rlvr job's launcher: a Ray cluster across a multi-node allocation.
"""
