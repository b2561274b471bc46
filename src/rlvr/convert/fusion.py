"""The two tensor fusions between HF and megatron-core layouts, written once for every family.

Notation: ``nq`` query heads, ``ng`` query groups (= KV heads), ``r = nq / ng`` query heads per group,
``d`` head dim, ``h`` hidden size, ``f`` MLP intermediate size; ``*t`` is the trailing shape (``[h]`` for a
weight, empty for a bias).

**QKV.** HF keeps ``q [nq*d, *t]``, ``k [ng*d, *t]``, ``v [ng*d, *t]``. megatron-core's ``linear_qkv`` output
is read as ``[ng, (r + 2) * d]`` (``SelfAttention.get_query_key_value_tensors``): per query group, its ``r``
query heads, then its key head, then its value head. So the fused tensor is ``[ng*(r+2)*d, *t]`` with rows
``[q_g0 (r*d) | k_g0 (d) | v_g0 (d) | q_g1 | k_g1 | v_g1 | ...]``. With ``r = 1`` (MHA) this is per-head
``q, k, v`` interleaving; it is never the plain ``cat([q, k, v])``.

**gate/up.** megatron's SwiGLU computes ``silu(x[..., :f]) * x[..., f:]`` on the ``linear_fc1`` output, so
``linear_fc1 = cat([gate, up]) [2f, *t]``: gate first (the activated half), up second.

Every function returns tensors with their own contiguous storage (no views into the input), so the results
can be saved with safetensors or torch DCP as they are.
"""

from __future__ import annotations

import torch


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, num_query_groups: int) -> torch.Tensor:
    """``q [nq*d, *t]``, ``k, v [ng*d, *t]`` -> grouped ``[ng*(r+2)*d, *t]`` (layout in the module docstring)."""
    ng, rest = num_query_groups, q.shape[1:]
    grouped = [x.reshape(ng, x.shape[0] // ng, *rest) for x in (q, k, v)]
    return torch.cat(grouped, dim=1).reshape(-1, *rest)


def split_qkv(
    qkv: torch.Tensor, *, num_heads: int, num_query_groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`fuse_qkv`: ``[ng*(r+2)*d, *t]`` -> ``q [nq*d, *t]``, ``k [ng*d, *t]``, ``v [ng*d, *t]``."""
    ng, r, rest = num_query_groups, num_heads // num_query_groups, qkv.shape[1:]
    d = qkv.shape[0] // (ng * (r + 2))
    grouped = qkv.reshape(ng, (r + 2) * d, *rest)
    q = grouped[:, : r * d].reshape(ng * r * d, *rest).clone()
    k = grouped[:, r * d : (r + 1) * d].reshape(ng * d, *rest).clone()
    v = grouped[:, (r + 1) * d :].reshape(ng * d, *rest).clone()
    return q, k, v


def fuse_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``gate, up [f, *t]`` -> ``linear_fc1 [2f, *t]`` (gate rows first)."""
    return torch.cat([gate, up], dim=0)


def split_gate_up(fc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`fuse_gate_up`: ``[2f, *t]`` -> ``gate [f, *t]``, ``up [f, *t]``."""
    gate, up = fc1.chunk(2, dim=0)
    return gate.clone(), up.clone()
