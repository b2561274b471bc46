"""The math verifier is math-verify configured as NeMo-RL's hf_math_verify, with failures named, never raised."""

from __future__ import annotations

import threading

import pytest
from math_verify import ExprExtractionConfig, LatexExtractionConfig, math_metric

from rlvr.errors import ConfigError, DataError
from rlvr.rewards.math_verifier import check_math, check_with_math_verify, exact_answer, ground_truth_of
from rlvr.rewards.registry import get_verifier, known_verifiers
from rlvr.rewards.verdict import EXCEPTION

PAIRS = [  # (response, ground truth, hand-judged reward)
    ("So the answer is \\boxed{\\frac{1}{2}}.", "0.5", 1.0),
    ("We get $\\boxed{0.5}$", "\\frac{1}{2}", 1.0),
    ("\\boxed{x^2+1}", "1+x^2", 1.0),
    ("The answer is 42", "42", 1.0),  # a plain final expression matches too (expression extractor)
    ("\\boxed{41}", "42", 0.0),
    ("\\boxed{0.333}", "\\frac{1}{3}", 0.0),  # precision 6: 0.333 is not 1/3
    ("\\boxed{0.3333333}", "\\frac{1}{3}", 1.0),
    ("no answer here", "7", 0.0),
    ("\\boxed{(1,2)}", "(1,2)", 1.0),
    ("\\boxed{[1,2]}", "(1,2)", 0.0),
]


@pytest.mark.parametrize("response, truth, expected", PAIRS)
def test_rewards_match_hand_judgement(response: str, truth: str, expected: float) -> None:
    """Equivalent answers in different notations score 1.0, wrong ones 0.0, neither reports an error."""
    verdict = check_math(response, truth)
    assert verdict.reward == expected
    assert verdict.error is None


def test_same_scores_as_the_library_called_as_nemo_rl_does() -> None:
    """check_math agrees with math_metric(Latex gold; Expr+Latex prediction) on gold '\\boxed{gt}'."""
    metric = math_metric(
        gold_extraction_target=(LatexExtractionConfig(),),
        pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()),
    )
    for response, truth, _ in PAIRS:
        library, _ = metric(["\\boxed{" + truth + "}"], [response])
        assert check_math(response, truth).reward == float(library)


def test_unparsable_ground_truth_is_a_counted_exception() -> None:
    """An empty ground truth makes math-verify raise; the verdict is 0.0 with cause 'exception', not a crash."""
    verdict = check_math("\\boxed{1}", "")
    assert (verdict.reward, verdict.error) == (0.0, EXCEPTION)
    assert "No gold targets" in verdict.detail


def test_off_main_thread_is_reported_not_raised() -> None:
    """math-verify's signal alarms need the main thread: from another thread the check fails visibly (an answer
    the exact-match fast path decides needs no math-verify, so it is scored there too)."""
    box = []
    thread = threading.Thread(target=lambda: box.extend([check_math("\\boxed{0.5}", "1/2"), check_math("1", "1")]))
    thread.start()
    thread.join()
    assert box[0].reward == 0.0 and box[0].error == EXCEPTION and "main thread" in box[0].detail
    assert box[1].reward == 1.0 and box[1].error is None


# Ground truths of every shape the fast path accepts, and some it must refuse.
TRUTHS = ["95", "-5", "0", "-0", "007", "0.5", "-0.25", "1.50", ".5", "12345678901234567890", "9" * 40, "0." + "1" * 40]
TRUTHS += ["+5", "1e5", "x", "abc", "(1,2)", "1/2", "\\frac{1}{2}", "1,000", "3 4", "1" * 41, "1" * 5000, " 95 "]
TRUTHS += [
    "\\frac{3}{4}",
    "-\\frac{6}{8}",
    "\\dfrac{190}{2}",
    "\\tfrac{0}{7}",
    "\\frac{3}{0}",
    "\\frac{03}{4}",
    "999999999999",
]
# Answers put into each template: the truth itself, and right or wrong values in other exact forms.
ANSWERS = ["96", "-96", "95", "0", "-0", "\\frac{3}{4}", "\\dfrac{6}{8}", "-\\frac{3}{4}", "\\frac{190}{2}", "0.75"]
ANSWERS += ["999999999998", "1000000000000", "\\frac{1}{0}", "\\frac{ 3 }{4}"]
# Responses built around a ground truth t; math-verify may read another answer out of most of them.
TEMPLATES = [
    "{t}",
    " {t}\n",
    "\t{t} ",
    "\\boxed{{{t}}}",
    "\\boxed{{ {t} }}",
    "$\\boxed{{{t}}}$",
    "The answer is \\boxed{{{t}}}.",
    "Working through the steps, the result is \\boxed{{{t}}}.",
    "So: \\boxed{{{t}}}!",
    "\\boxed{{{t}}} percent",
    "\\boxed{{{t}}} pct",
    "The final answer is \\boxed{{{t}}}",
    "The final answer is 13. \\boxed{{{t}}}",
    "answer: 13 \\boxed{{{t}}}",
    "\\boxed{{{t}}} = 13",
    "\\boxed{{{t}}}^2",
    "-\\boxed{{{t}}}",
    "\\boxed{{{t}}} \\boxed{{13}}",
    "\\boxed{{13}} \\boxed{{{t}}}",
    "\\boxed{{{t}}} \\fbox{{13}}",
    "\\boxed {{{t}}}",
    "\\boxed{{{t}.}}",
    "{t}.",
    "{t}%",
    "${t}$",
    "A: {t}",
    "{t} apples",
    "\\boxed{{{t}}} and {{x}}",
    "[{t}]",
    "\\boxed{{{{{t}}}}}",
    "\\text{{\\boxed{{{t}}}}}",
]


def test_exact_answer_agrees_with_math_verify_wherever_it_decides() -> None:
    """Every (template, truth) pair, with the truth and with right or wrong answers in other exact forms in the
    template: where the fast path decides, math-verify gives the same reward. Not vacuous: both rewards occur, for
    integers and fractions, bare and boxed."""
    decided = {0.0: 0, 1.0: 0}
    for truth in TRUTHS:
        for template in TEMPLATES:
            for answer in [truth, *ANSWERS]:
                response = template.format(t=answer)
                fast = exact_answer(response, truth)
                if fast is None:
                    continue
                decided[fast.reward] += 1
                assert fast.error is None
                assert check_with_math_verify(response, truth).reward == fast.reward, (response, truth)
    assert decided[1.0] >= 150 and decided[0.0] >= 500, decided


@pytest.mark.parametrize(
    "response, truth",
    [
        ("+5", "+5"),  # equal strings that math-verify does not call equal: the fast path must leave them alone
        ("1e5", "1e5"),
        ("x", "x"),
        ("(1,2)", "(1,2)"),
        ("3 4", "3 4"),
        ("1" * 5000, "1" * 5000),
        ("\\boxed{13} \\boxed{12}", "12"),  # two boxes, an anchored other answer, a second box-like command
        ("The final answer is 13. \\boxed{12}", "12"),
        ("\\boxed{12} \\fbox{13}", "12"),
        ("\\boxed {12}", "12"),
        ("\\boxed{12.}", "12"),
        ("0.5", "1/2"),  # different strings, equal numbers: math-verify decides
        ("1,000", "1000"),
        ("96.0", "96"),
        ("\\boxed{0.75}", "\\frac{3}{4}"),  # a decimal against a fraction: math-verify rounds floats
        ("\\frac{3}{4}", "\\frac{3}{4}"),  # a bare fraction: left to math-verify's extractors
        ("\\boxed{\\frac{1}{3}} \\boxed{3}", "3"),
    ],
)
def test_exact_answer_declines_what_math_verify_must_decide(response: str, truth: str) -> None:
    """These are not decided by the fast path; check_math's verdict is math-verify's."""
    assert exact_answer(response, truth) is None
    assert check_math(response, truth) == check_with_math_verify(response, truth)


def test_registry_routes_math_and_rejects_unknown_names() -> None:
    """'math' is registered and callable as (response, reference) -> float; an unknown name lists known ones."""
    math = get_verifier("math")
    assert "math" in known_verifiers()
    assert math("\\boxed{3}", "3") == 1.0
    assert math.reference({"task_name": "math", "ground_truth": 12}) == "12"
    with pytest.raises(ConfigError, match="known verifiers: .*math"):
        get_verifier("maths")


def test_missing_ground_truth_is_a_data_error() -> None:
    """A math row without 'ground_truth' fails with a message naming the field."""
    with pytest.raises(DataError, match="ground_truth"):
        ground_truth_of({"task_name": "math", "problem": "1+1"})


@pytest.mark.slow
def test_library_timeout_is_counted_not_silent() -> None:
    """math-verify swallows its own 5 s comparison alarm; the verdict still names it as a timeout (~5 s)."""
    verdict = check_math("\\boxed{7^{7^{9}}}", "3")
    assert (verdict.reward, verdict.error) == (0.0, "timeout")
