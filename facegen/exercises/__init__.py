"""Checks for the notebooks' exercises.

Each exercise in a notebook has three cells: an attempt cell that starts empty (`answer_1 = None`), a check cell that
calls one of the checks of `facegen.exercises.notebookNN` and says "not attempted yet", "correct" or "not yet — hint:
...", and a collapsed worked solution whose check must say "correct" (`.confirm()` raises otherwise, so nbval catches a
wrong solution). A check never raises on the learner's answer: an answer that raises or has the wrong type is "not
yet", with what went wrong.

This module holds the verdict and the comparisons the per-notebook checks are built from.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

NOT_ATTEMPTED = "not attempted"
CORRECT = "correct"
NOT_YET = "not yet"


@dataclass(frozen=True)
class Verdict:
    """What a check says about an answer. Shown in a notebook as one line."""

    status: str  # NOT_ATTEMPTED, CORRECT or NOT_YET
    message: str

    def __str__(self) -> str:
        if self.status == NOT_ATTEMPTED:
            return f"not attempted yet — {self.message}"
        if self.status == CORRECT:
            return f"correct — {self.message}"
        return f"not yet — hint: {self.message}"

    __repr__ = __str__  # the notebook displays the verdict as the cell's value

    def __bool__(self) -> bool:
        return self.status == CORRECT

    def confirm(self) -> "Verdict":
        """For worked solutions: the verdict itself if correct, else an AssertionError saying what the check said."""
        if self.status != CORRECT:
            raise AssertionError(f"the worked solution does not pass its own check: {self}")
        return self


def correct(message: str) -> Verdict:
    return Verdict(CORRECT, message)


def not_yet(hint: str) -> Verdict:
    return Verdict(NOT_YET, hint)


def check(name: str) -> Callable:
    """Decorator for a check whose first argument is the learner's answer, named `name` in the notebook: None (or a
    tuple/list/dict holding only None) is "not attempted yet"; an answer on which the check raises is "not yet",
    naming the error. The check itself returns a Verdict."""

    def decorate(function: Callable[..., Verdict]) -> Callable[..., Verdict]:
        @functools.wraps(function)
        def checked(answer, *args, **kwargs) -> Verdict:
            if _empty(answer):
                return Verdict(NOT_ATTEMPTED, f"set `{name}` above, then run this cell again")
            try:
                return function(answer, *args, **kwargs)
            except Exception as error:  # the learner's code or answer failed: say so, never break the notebook
                return not_yet(f"checking `{name}` raised {type(error).__name__}: {error}")

        return checked

    return decorate


def _empty(answer) -> bool:
    if answer is None:
        return True
    if isinstance(answer, (tuple, list)) and answer and all(a is None for a in answer):
        return True
    if isinstance(answer, dict) and answer and all(a is None for a in answer.values()):
        return True
    return False


def as_number(value, what: str) -> float:
    """`value` (a Python number, a NumPy scalar or a one-element tensor) as a float; TypeError naming `what`."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{what} should be one number, got a tensor of shape {tuple(value.shape)}")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{what} should be a number, got {type(value).__name__}")
    return float(value)


def close(value, expected: float, rel: float = 1e-6, abs_tol: float = 0.0) -> bool:
    """`value` within a relative (and absolute) tolerance of `expected`; NaN is never close."""
    return math.isclose(value, expected, rel_tol=rel, abs_tol=abs_tol)


def unpack(answer, n: int, what: str) -> tuple:
    """A tuple/list answer of exactly `n` parts; TypeError naming `what` otherwise."""
    if not isinstance(answer, (tuple, list)) or len(answer) != n:
        raise TypeError(f"{what} should be {n} values in a tuple, e.g. ({', '.join(['...'] * n)})")
    return tuple(answer)


def first_mismatch(function: Callable, reference: Callable, cases: Iterable, rel: float = 1e-6,
                   abs_tol: float = 1e-9):
    """The first case on which `function(case)` and `reference(case)` differ as numbers, or None if none does."""
    for case in cases:
        mine, theirs = as_number(function(case), "the function's result"), as_number(reference(case), "reference")
        if not close(mine, theirs, rel, abs_tol):
            return case, mine, theirs
    return None
