"""The verdict machinery the notebooks' exercise checks are built from (facegen.exercises)."""

import math

import pytest
import torch

from facegen import exercises
from facegen.exercises import Verdict, check, correct, not_yet


@check("answer_1")
def _square_of_three(answer):
    value = exercises.as_number(answer, "answer_1")
    return correct("3 squared") if exercises.close(value, 9.0) else not_yet("multiply 3 by itself")


def test_empty_answers_are_not_attempted_and_say_which_variable_to_set():
    for empty in (None, (None, None), [None], {"a": None}):
        verdict = _square_of_three(empty)
        assert verdict.status == exercises.NOT_ATTEMPTED and not verdict
        assert str(verdict).startswith("not attempted yet") and "`answer_1`" in str(verdict)


def test_right_and_wrong_answers():
    assert _square_of_three(9) and _square_of_three(torch.tensor(9.0)) and _square_of_three(9.0000000001)
    wrong = _square_of_three(6)
    assert wrong.status == exercises.NOT_YET and str(wrong) == "not yet — hint: multiply 3 by itself"
    assert not _square_of_three(float("nan"))


def test_an_answer_that_breaks_the_check_is_not_yet_never_an_exception():
    for bad in ("nine", torch.ones(2), True, [1, 2]):
        verdict = _square_of_three(bad)
        assert verdict.status == exercises.NOT_YET and "raised TypeError" in verdict.message


def test_confirm_passes_correct_verdicts_through_and_raises_on_others():
    assert correct("x").confirm() == correct("x")
    for verdict in (not_yet("h"), Verdict(exercises.NOT_ATTEMPTED, "m")):
        with pytest.raises(AssertionError, match="worked solution"):
            verdict.confirm()


def test_repr_is_the_one_line_a_notebook_shows():
    assert repr(correct("fine")) == "correct — fine"


def test_unpack_and_first_mismatch():
    assert exercises.unpack((1, 2), 2, "pair") == (1, 2)
    with pytest.raises(TypeError, match=r"2 values"):
        exercises.unpack(1, 2, "pair")
    assert exercises.first_mismatch(lambda x: x * 2, lambda x: x + x, [1, 2.5]) is None
    assert exercises.first_mismatch(lambda x: x * x, lambda x: x + x, [2, 3]) == (3, 9.0, 6.0)
    assert exercises.close(math.pi, 3.14159, rel=1e-5) and not exercises.close(math.pi, 3.14, rel=1e-5)
