"""The trainable policy (HF/PyTorch backend) and the log-prob math it shares with generation.

Import :class:`rlvr.policy.hf.HFPolicy` from its module; this package itself stays light (no transformers import).
"""
