"""QKV grouping and gate/up stacking between HF and megatron-core layouts, checked on hand-written tensors."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from rlvr.convert.fusion import fuse_gate_up, fuse_qkv, split_gate_up, split_qkv


def _rows(prefix: int, n: int) -> torch.Tensor:
    """``[n, 2]`` rows whose first column encodes (prefix, row) so the final order can be read off."""
    values = torch.tensor([[prefix * 100 + r, -(prefix * 100 + r)] for r in range(n)], dtype=torch.float32)
    return values


def test_fuse_qkv_groups_query_heads_with_their_kv_head() -> None:
    """GQA (nq=4, ng=2, d=2): fused rows are [q0 q1 k0 v0 | q2 q3 k1 v1], each head d rows long."""
    d = 2
    q, k, v = _rows(1, 4 * d), _rows(2, 2 * d), _rows(3, 2 * d)
    fused = fuse_qkv(q, k, v, num_query_groups=2)
    expected_first_col = [100, 101, 102, 103, 200, 201, 300, 301, 104, 105, 106, 107, 202, 203, 302, 303]
    assert fused.shape == (16, 2)
    assert fused[:, 0].tolist() == expected_first_col


def test_fuse_qkv_mha_interleaves_per_head() -> None:
    """MHA (nq=ng=2, d=1): rows are q0 k0 v0 q1 k1 v1, not the plain concatenation q0 q1 k0 k1 v0 v1."""
    q, k, v = _rows(1, 2), _rows(2, 2), _rows(3, 2)
    fused = fuse_qkv(q, k, v, num_query_groups=2)
    assert fused[:, 0].tolist() == [100, 200, 300, 101, 201, 301]


def test_fuse_qkv_bias_one_dimensional() -> None:
    """Biases ``[rows]`` fuse with the same row order as weights (nq=2, ng=1, d=1: q0 q1 k0 v0)."""
    fused = fuse_qkv(torch.tensor([1.0, 2.0]), torch.tensor([3.0]), torch.tensor([4.0]), num_query_groups=1)
    assert_close(fused, torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_split_qkv_inverts_fuse_bit_exactly() -> None:
    """split(fuse(q, k, v)) == (q, k, v) exactly, for ratios 1, 2 and 4, and the parts own their storage."""
    torch.manual_seed(0)
    for nq, ng in ((4, 4), (4, 2), (4, 1)):
        d, h = 3, 5
        q, k, v = torch.randn(nq * d, h), torch.randn(ng * d, h), torch.randn(ng * d, h)
        fused = fuse_qkv(q, k, v, num_query_groups=ng)
        parts = split_qkv(fused, num_heads=nq, num_query_groups=ng)
        for got, want in zip(parts, (q, k, v), strict=True):
            assert torch.equal(got, want)
            assert got.untyped_storage().data_ptr() != fused.untyped_storage().data_ptr()


def test_gate_up_stacks_gate_first_and_splits_back() -> None:
    """linear_fc1 = [gate; up] (the activated half first); splitting returns the two halves unchanged."""
    gate, up = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])
    fc1 = fuse_gate_up(gate, up)
    assert_close(fc1, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    got_gate, got_up = split_gate_up(fc1)
    assert torch.equal(got_gate, gate) and torch.equal(got_up, up)
