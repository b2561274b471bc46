"""Length-ordered, trimmed micro-batches: each runs on the columns its rows use, with unchanged results."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from rlvr.policy.batching import length_order, select_rows, trim_columns, used_width
from rlvr.policy.hf import HFPolicy
from tests.unit.policy.test_hf_policy import SGD, make_batch, pg_loss, reference_logprobs


def test_length_order_is_a_stable_sort_by_real_length():
    """Rows 5, 2, 0 and 1 have 1, 2, 3 and 3 real tokens: shortest first, ties keep their row order."""
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert length_order(mask).tolist() == [5, 2, 0, 1, 3, 4]


def test_used_width_rounds_up_to_the_multiple_and_never_past_the_batch():
    """The last used column is 3 (width 4); multiples of 3 and 8 round to 6 and then cap at S = 7."""
    mask = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0]])
    assert [used_width(mask, m) for m in (1, 3, 8)] == [4, 6, 7]
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    assert used_width(left) == 4  # left padding leaves nothing to cut


def test_select_and_trim_touch_only_row_and_position_tensors():
    """[B] and [B, S] tensors are reordered, only [B, S] ones are cut; other values pass through."""
    data = {"ids": torch.arange(12).view(3, 4), "sample_mask": torch.tensor([1.0, 0.0, 1.0]), "note": "x"}
    picked = trim_columns(select_rows(data, torch.tensor([2, 0]), 3), 2, 4)
    assert picked["ids"].tolist() == [[8, 9], [0, 1]]
    assert picked["sample_mask"].tolist() == [1.0, 1.0] and picked["note"] == "x"


def _record_widths(model) -> list[int]:
    widths: list[int] = []
    model.model.register_forward_pre_hook(lambda _m, _a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    return widths


def test_logprob_pass_runs_narrow_micro_batches_with_the_per_row_result(make_model):
    """Lengths 10,7,9,6,10,8,5,10 in micro-batches of 2: widths 6, 8, 10, 10 instead of 10 each, and the log-probs
    equal an unpadded forward of every row alone, in the original row order."""
    batch = make_batch()
    model = make_model(seed=0)
    widths = _record_widths(model)
    policy = HFPolicy(model, temperature=0.7)
    out = policy.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=2, filtered=False)
    assert widths == [6, 8, 10, 10]
    with torch.no_grad():
        assert_close(out, reference_logprobs(model, batch["input_ids"], batch["attention_mask"], 0.7))
    widths.clear()
    HFPolicy(model, temperature=0.7, sequence_multiple=4).get_logprobs(
        batch["input_ids"], batch["attention_mask"], micro_batch_size=2, filtered=False
    )
    assert widths == [8, 8, 10, 10]  # make_sequence_length_divisible_by=4, capped at S = 10


def test_training_on_trimmed_micro_batches_takes_the_full_batch_step(make_model):
    """Micro-batches of 2 (widths 6, 8, 10, 10) give the loss, gradient norm and SGD update of one micro-batch
    holding all 8 rows at full width."""
    narrow, full = make_model(seed=0), make_model(seed=0)
    widths = _record_widths(narrow)
    m_narrow = HFPolicy(narrow, optimizer=SGD, temperature=0.7).train(
        make_batch(), pg_loss, global_batch_size=8, micro_batch_size=2
    )
    m_full = HFPolicy(full, optimizer=SGD, temperature=0.7).train(
        make_batch(), pg_loss, global_batch_size=8, micro_batch_size=8
    )
    assert widths == [6, 8, 10, 10]
    for key in ("loss", "grad_norm", "tokens", "lp_min", "lp_max"):
        assert_close(torch.tensor(m_narrow[key]), torch.tensor(m_full[key]), rtol=1e-5, atol=1e-6, msg=key)
    for (name, p), q in zip(narrow.named_parameters(), full.parameters()):
        assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
