"""GRPO math: advantages, the clipped policy-gradient loss and reward shaping, as pure tensor functions.

Nothing here reads files or configs from disk; the trainer hands in tensors and plain dicts.
"""
