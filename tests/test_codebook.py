import numpy as np
import pytest
import torch

from facegen.codebook import (attribute_codes, attribute_position_shift, code_counts, code_patches,
                              position_histograms, principal_components)


def test_code_counts_by_hand():
    indices = torch.tensor([[[0, 1], [1, 3]], [[3, 3], [1, 0]]])
    assert code_counts(indices, 5).tolist() == [2, 3, 0, 3, 0]


def test_code_patches_returns_the_cells_of_that_code():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    indices = torch.tensor([[[7, 0], [0, 0]], [[0, 0], [0, 7]]])
    patches = code_patches(images, indices, code=7)
    assert patches.shape == (2, 3, 2, 2)
    assert torch.equal(patches[0], images[0, :, 0:2, 0:2])
    assert torch.equal(patches[1], images[1, :, 2:4, 2:4])
    assert code_patches(images, indices, code=5).shape == (0, 3, 2, 2)
    with pytest.raises(ValueError, match="do not match"):
        code_patches(images[:1], indices, code=7)


def test_code_patches_in_a_region_come_only_from_inside_it():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    indices = torch.tensor([[[7, 0], [0, 0]], [[0, 0], [0, 7]]])
    bottom_row = (slice(1, 2), slice(0, 2))
    patches = code_patches(images, indices, code=7, region=bottom_row)
    assert patches.shape == (1, 3, 2, 2) and torch.equal(patches[0], images[1, :, 2:4, 2:4])
    assert torch.equal(indices, torch.tensor([[[7, 0], [0, 0]], [[0, 0], [0, 7]]]))  # the tokens are not changed


def test_position_histograms_sum_to_one_and_count_right():
    indices = torch.tensor([[[0, 1]], [[0, 2]], [[1, 2]], [[0, 2]]])  # N=4, h=1, w=2
    hist = position_histograms(indices, 3)
    assert torch.allclose(hist.sum(-1), torch.ones(1, 2))
    assert hist[0, 0].tolist() == [0.75, 0.25, 0.0]
    assert hist[0, 1].tolist() == [0.0, 0.25, 0.75]


def test_attribute_shift_is_one_where_codes_differ_and_zero_where_they_agree():
    n = 6
    indices = torch.zeros(n, 2, 2, dtype=torch.long)
    has = torch.tensor([1, 1, 1, 0, 0, 0])
    indices[has.bool(), 1, 1] = 4  # "glasses" always change this one position
    shift = attribute_position_shift(indices, has, 5)
    assert shift.tolist() == [[0.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="some faces True and some False"):
        attribute_position_shift(indices, torch.ones(n), 5)


def test_attribute_codes_ranks_the_enriched_code_first():
    indices = torch.zeros(4, 2, 2, dtype=torch.long)
    indices[:2, 0, 0] = 3  # only faces with the attribute use code 3
    has = torch.tensor([1, 1, 0, 0])
    code, n_with, n_without, log_ratio = attribute_codes(indices, has, 4, smoothing=1.0)[0]
    assert (code, n_with, n_without) == (3, 2, 0)
    p_with, p_without = (2 + 1) / (8 + 4), (0 + 1) / (8 + 4)
    assert log_ratio == pytest.approx(np.log(p_with / p_without))
    region_top = attribute_codes(indices, has, 4, region=(slice(1, 2), slice(0, 2)))[0]
    assert region_top[0] != 3  # outside the region code 3 never occurs


def test_principal_components_match_numpy():
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(50, 6, generator=g) * torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1, 0.1])
    proj, ratio = principal_components(vectors, k=2)
    centred = (vectors - vectors.mean(0)).numpy()
    eigvals = np.sort(np.linalg.eigvalsh(np.cov(centred.T, bias=True)))[::-1]
    assert ratio.numpy() == pytest.approx(eigvals[:2] / eigvals.sum(), rel=1e-4)
    assert proj.var(dim=0, unbiased=False).numpy() == pytest.approx(eigvals[:2], rel=1e-4)
