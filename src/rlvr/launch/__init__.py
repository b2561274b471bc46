"""Launching runs on an executor: one entry point per executor, profiles, Slurm guards, squashing, Ray.

The path of ``nemotron steps run``: the CLI parses and loads the config into a
:class:`~rlvr.launch.request.RunRequest`; :func:`rlvr.launch.executors.prepare_launch` hands it to the profile's
executor, which returns a :class:`~rlvr.launch.request.Launch` (the Snakemake command, its environment, how ``-b``
detaches it); the CLI runs it.

* :mod:`rlvr.launch.local`, :mod:`rlvr.launch.slurm`, :mod:`rlvr.launch.lepton`: the executors' entry points
  (``prepare(request) -> Launch``). The Slurm one guards against the two traps that hang or break the Snakemake
  Slurm plugin, checks the rlvr topology against the profile, squashes the image and submits the ``-b``
  controller job.
* :mod:`rlvr.launch.profile` reads a profile folder: Snakemake's options (``config.yaml``) and the launch
  settings that ``nemotron steps run`` itself needs (``launch.yaml``: controller job, container image, squash).
* :mod:`rlvr.launch.squash` turns a container image into a reusable ``.sqsh`` file with ``enroot import``.
* :mod:`rlvr.launch.topology` checks that a Slurm allocation matches ``cluster.*``.
* :mod:`rlvr.launch.secret_env` keeps secrets out of what Slurm stores.
* :mod:`rlvr.launch.supervise` runs Snakemake attached and stops its whole process group on Ctrl-C.
* :mod:`rlvr.launch.ray_slurm` is the rlvr job's launcher: a Ray cluster across a multi-node allocation.
"""
