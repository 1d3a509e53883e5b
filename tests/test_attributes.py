import pytest
import torch

from facegen.attributes import CELEBA_ATTRIBUTES, CONDITIONING_ATTRIBUTES, requests_from_rows


def test_requests_from_rows_read_each_named_column_as_present_or_absent():
    rows = -torch.ones(2, 40, dtype=torch.int8)
    rows[0, CELEBA_ATTRIBUTES.index("Smiling")] = 1
    rows[1, CELEBA_ATTRIBUTES.index("Male")] = 1
    rows[1, CELEBA_ATTRIBUTES.index("Attractive")] = 1  # not a conditioning attribute: not asked for
    first, second = requests_from_rows(rows)
    assert list(first) == list(CONDITIONING_ATTRIBUTES)
    assert {name for name, value in first.items() if value} == {"Smiling"}
    assert {name for name, value in second.items() if value} == {"Male"}
    assert requests_from_rows(rows, ("Male", "Smiling")) == [{"Male": 0, "Smiling": 1}, {"Male": 1, "Smiling": 0}]
    with pytest.raises(KeyError, match="unknown CelebA attribute 'Smile'"):
        requests_from_rows(rows, ("Smile",))
