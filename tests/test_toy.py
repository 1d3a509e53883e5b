"""The 2-D toys of notebook 01: values checked by hand, against brute force, and on runs whose outcome is known."""

import math

import pytest
import torch

from facegen.quantize import VectorQuantizer
from facegen.toy import ToyVQAutoencoder, gaussian_blobs, ring_centers, train_toy_vqvae, voronoi_grid


def quantizer_with_codebook(codebook, **kwargs) -> VectorQuantizer:
    kwargs.setdefault("kmeans_init", False)
    vq = VectorQuantizer(codebook.shape[0], codebook.shape[1], **kwargs)
    with torch.no_grad():
        vq.codebook.copy_(codebook)
    return vq


# --- ring_centers and gaussian_blobs ---------------------------------------------------------------------------------


def test_ring_centers_by_hand():
    expected = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    assert torch.allclose(ring_centers(4, 2.0), expected, atol=1e-6)
    six = ring_centers(6, 3.0)
    assert torch.allclose(six.norm(dim=1), torch.full((6,), 3.0))
    assert torch.allclose(six[1], torch.tensor([1.5, 3.0 * math.sqrt(3) / 2]), atol=1e-6)  # 60 degrees


def test_gaussian_blobs_without_noise_are_the_centres():
    centers = torch.tensor([[0.0, 0.0], [5.0, 1.0], [-2.0, 3.0]])
    points, labels = gaussian_blobs(50, centers, std=0.0, seed=3)
    assert points.shape == (50, 2) and labels.dtype == torch.long
    assert torch.equal(points, centers[labels])
    assert set(labels.tolist()) == {0, 1, 2}


def test_gaussian_blobs_have_the_right_means_and_spread_and_repeat_per_seed():
    centers = torch.tensor([[0.0, 0.0], [10.0, -4.0]])
    points, labels = gaussian_blobs(8000, centers, std=0.5, seed=0)
    for c in range(2):
        members = points[labels == c]
        assert torch.allclose(members.mean(dim=0), centers[c], atol=0.03)
        assert torch.allclose(members.std(dim=0), torch.full((2,), 0.5), atol=0.03)
    again, _ = gaussian_blobs(8000, centers, std=0.5, seed=0)
    other, _ = gaussian_blobs(8000, centers, std=0.5, seed=1)
    assert torch.equal(points, again) and not torch.equal(points, other)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=10, centers=torch.zeros(3), std=1.0), "centers must be"),
    (dict(n=0, centers=torch.zeros(3, 2), std=1.0), "n must be"),
    (dict(n=10, centers=torch.zeros(3, 2), std=-1.0), "std >= 0"),
])
def test_gaussian_blobs_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gaussian_blobs(**kwargs)


def test_ring_centers_rejects_bad_input():
    with pytest.raises(ValueError, match="count must be"):
        ring_centers(0, 1.0)


# --- voronoi_grid ----------------------------------------------------------------------------------------------------


def test_voronoi_grid_rows_are_heights_and_columns_are_widths():
    below_above = torch.tensor([[0.0, -1.0], [0.0, 1.0]])  # code 0 below the x axis, code 1 above
    xs, ys, cells = voronoi_grid(below_above, (-2, 2), (-2, 2), resolution=4)  # ys = -2, -2/3, 2/3, 2
    assert torch.equal(cells, torch.tensor([[0] * 4, [0] * 4, [1] * 4, [1] * 4]))
    left_right = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    _, _, cells = voronoi_grid(left_right, (-2, 2), (-2, 2), resolution=4)
    assert torch.equal(cells, torch.tensor([[0, 0, 1, 1]] * 4))
    assert torch.allclose(xs, torch.tensor([-2.0, -2 / 3, 2 / 3, 2.0]))


def test_voronoi_grid_equals_brute_force():
    torch.manual_seed(0)
    codebook = torch.randn(7, 2) * 2
    xs, ys, cells = voronoi_grid(codebook, (-3, 4), (-5, 1), resolution=31)
    for i in (0, 7, 30):
        for j in (0, 12, 30):
            point = torch.tensor([xs[j], ys[i]])
            assert cells[i, j] == (codebook - point).norm(dim=1).argmin()


def test_voronoi_grid_rejects_bad_input():
    with pytest.raises(ValueError, match=r"codebook must be \(K, 2\)"):
        voronoi_grid(torch.zeros(4, 3), (0, 1), (0, 1))
    with pytest.raises(ValueError, match="resolution"):
        voronoi_grid(torch.zeros(4, 2), (0, 1), (0, 1), resolution=1)


# --- the toy autoencoder and its training loop -----------------------------------------------------------------------


def test_toy_autoencoder_starts_as_identity_maps():
    points = torch.tensor([[1.0, 2.0], [-3.0, 0.5], [0.0, 0.0]])
    model = ToyVQAutoencoder(quantizer_with_codebook(points.clone())).eval()
    assert torch.equal(model.encoder(points), points)
    reconstruction, vq = model(points)  # every point IS a code, so nothing is lost
    assert torch.equal(vq.indices, torch.tensor([0, 1, 2]))
    assert torch.allclose(reconstruction, points) and vq.loss.item() == 0.0


# Twelve blobs on a ring; the paper's codebook init (uniform in +-1/K) puts every code near the origin, inside the
# ring, and only the codes on the edge of that tiny cloud are ever nearest to a data point.
RING, _ = gaussian_blobs(1000, ring_centers(12, 3.0), std=0.3, seed=0)


def test_paper_init_collapses_and_restarts_and_kmeans_fix_it():
    torch.manual_seed(1)
    collapsed = train_toy_vqvae(RING, VectorQuantizer(16, 2, kmeans_init=False), steps=120, seed=0)
    torch.manual_seed(1)
    restarted = train_toy_vqvae(RING, VectorQuantizer(16, 2, kmeans_init=False, restart_after=20), steps=120, seed=0)
    kmeans = train_toy_vqvae(RING, VectorQuantizer(16, 2, kmeans_init=True), steps=120, seed=0)
    assert len(collapsed.codes_used) == len(collapsed.perplexity) == len(collapsed.loss) == 120
    assert collapsed.codes_used[-1] <= 8 and collapsed.perplexity[-1] < 8
    assert restarted.codes_used[-1] >= 14 and restarted.model.quantizer.restarts.item() > 0
    assert kmeans.codes_used[0] >= 14 and kmeans.codes_used[-1] >= 14 and kmeans.perplexity[-1] > 10
    # learning happened: the loss of the last steps is well below the first step's (k-means starts near its best)
    for run in (collapsed, restarted):
        assert sum(run.loss[-10:]) / 10 < 0.5 * run.loss[0]


def test_history_matches_the_final_model_and_runs_repeat():
    torch.manual_seed(1)
    run = train_toy_vqvae(RING, VectorQuantizer(16, 2, ema=True), steps=30, seed=4)
    with torch.no_grad():
        tokens = run.model.quantizer.encode(run.model.encoder(RING))
    counts = torch.bincount(tokens, minlength=16)
    assert run.codes_used[-1] == int((counts > 0).sum())
    p = counts[counts > 0].double() / counts.sum()
    assert run.perplexity[-1] == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)
    torch.manual_seed(1)
    again = train_toy_vqvae(RING, VectorQuantizer(16, 2, ema=True), steps=30, seed=4)
    assert again.loss == run.loss and again.codes_used == run.codes_used


def test_ema_codebook_is_moved_by_averages_not_by_the_optimizer():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2, ema=True)
    run = train_toy_vqvae(RING, vq, steps=5, seed=0)
    assert not run.model.quantizer.codebook.requires_grad
    assert run.model.quantizer.codebook.grad is None


def test_train_toy_vqvae_rejects_bad_input():
    with pytest.raises(ValueError, match=r"data must be \(N, 2\)"):
        train_toy_vqvae(torch.zeros(10, 3), VectorQuantizer(4, 2))
    with pytest.raises(ValueError, match="steps and batch_size"):
        train_toy_vqvae(torch.zeros(10, 2), VectorQuantizer(4, 2), steps=0)


def test_train_toy_vqvae_restores_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_toy_vqvae(RING, VectorQuantizer(4, 2), steps=2, seed=0)
        assert torch.get_num_threads() == 2  # it runs on one thread inside, and gives the caller's setting back
    finally:
        torch.set_num_threads(before)
