"""One entry point per workflow stage (``python -m rlvr.stages <stage> ...``).

Rules call these; each parses its arguments, calls one engine function of the package and turns a
:class:`rlvr.errors.UserError` into one clear message and a non-zero exit. Nothing here knows Snakemake.
"""
