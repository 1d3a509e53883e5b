"""VectorQuantizer: values checked against brute force, hand computations and a reference implementation."""

import math

import pytest
import torch
from vector_quantize_pytorch import VectorQuantize as ReferenceVQ

from facegen.quantize import (
    CodebookUsage,
    QuantizerOutput,
    VectorQuantizer,
    kmeans,
    nearest_codes,
    perplexity,
    usage_stats,
)


def quantizer_with_codebook(codebook, **kwargs) -> VectorQuantizer:
    """A quantizer whose codes are exactly `codebook` (K, D), no k-means init unless asked."""
    kwargs.setdefault("kmeans_init", False)
    vq = VectorQuantizer(codebook.shape[0], codebook.shape[1], **kwargs)
    with torch.no_grad():
        vq.codebook.copy_(codebook)
        if vq.ema:
            vq.ema_embed_sum.copy_(codebook)
    return vq


# --- nearest codes ---------------------------------------------------------------------------------------------------


def test_nearest_codes_equals_brute_force_argmin():
    torch.manual_seed(0)
    flat, codebook = torch.randn(500, 8), torch.randn(64, 8)
    expected = torch.cdist(flat, codebook).argmin(dim=1)
    assert torch.equal(nearest_codes(flat, codebook), expected)


def test_forward_on_feature_maps_matches_brute_force_per_position():
    torch.manual_seed(1)
    vq = quantizer_with_codebook(torch.randn(32, 6)).eval()
    z = torch.randn(3, 6, 5, 4)  # (B, D, H, W)
    out = vq(z)
    assert isinstance(out, QuantizerOutput)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 6)  # position (b, h, w) -> row
    expected = torch.cdist(vectors, vq.codebook.detach()).argmin(dim=1).reshape(3, 5, 4)
    assert out.indices.dtype == torch.long and torch.equal(out.indices, expected)
    # quantized[b, :, h, w] is the code of indices[b, h, w]
    assert torch.allclose(out.quantized[1, :, 2, 3], vq.codebook[expected[1, 2, 3]], atol=1e-6)
    # z + (q - z) equals q up to float rounding, hence the small atol
    assert torch.allclose(out.quantized, vq.codebook[expected].permute(0, 3, 1, 2), atol=1e-6)


def test_encode_decode_agree_with_forward():
    torch.manual_seed(2)
    vq = quantizer_with_codebook(torch.randn(16, 4)).eval()
    z = torch.randn(2, 4, 3, 3)
    out = vq(z)
    assert torch.equal(vq.encode(z), out.indices)
    assert torch.allclose(vq.decode(vq.encode(z)), out.quantized, atol=1e-6)
    flat = torch.randn(7, 4)  # the (N, D) form of notebook 01
    assert torch.equal(vq.encode(flat), vq(flat).indices)
    assert torch.allclose(vq.decode(vq.encode(flat)), vq.codebook[vq.encode(flat)])


def test_bad_shape_gives_one_clear_error():
    vq = VectorQuantizer(4, 3, kmeans_init=False)
    with pytest.raises(ValueError, match=r"z must be \(B, 3, H, W\) or \(N, 3\)"):
        vq(torch.randn(2, 5, 4, 4))


# --- straight-through and losses -------------------------------------------------------------------------------------


def test_straight_through_passes_the_output_gradient_unchanged():
    torch.manual_seed(3)
    vq = quantizer_with_codebook(torch.randn(8, 4))
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    w = torch.randn(2, 4, 3, 3)
    (w * vq(z).quantized).sum().backward()
    assert torch.equal(z.grad, w)


def two_code_example(beta=0.25, ema=False):
    """Codes e0 = (0, 0), e1 = (4, 0); vectors (1, 0) -> e0 and (3, 1) -> e1.

    Squared errors: (1, 0) - (0, 0) -> 1; (3, 1) - (4, 0) -> 1 + 1 = 2; sum 3 over 4 elements -> mean 0.75.
    """
    vq = quantizer_with_codebook(torch.tensor([[0.0, 0.0], [4.0, 0.0]]), beta=beta, ema=ema)
    z = torch.tensor([[1.0, 0.0], [3.0, 1.0]], requires_grad=True)
    return vq, z


def test_losses_on_a_two_code_example_by_hand():
    vq, z = two_code_example(beta=0.25)
    out = vq(z)
    assert out.indices.tolist() == [0, 1]
    assert out.quantized.tolist() == [[0.0, 0.0], [4.0, 0.0]]
    assert out.codebook_loss.item() == pytest.approx(0.75)
    assert out.commitment_loss.item() == pytest.approx(0.25 * 0.75)  # beta is inside
    assert out.loss.item() == pytest.approx(0.75 + 0.1875)
    assert out.perplexity.item() == pytest.approx(2.0)  # two codes, used once each


def test_codebook_loss_moves_codes_towards_their_vectors_and_not_z():
    vq, z = two_code_example()
    vq(z).codebook_loss.backward()
    assert z.grad is None  # sg[z]: nothing flows into the encoder
    # d/de_k mean||z - e||^2 = 2 / (N * D) * sum_{i -> k} (e_k - z_i), N * D = 4
    expected = torch.tensor([[2 / 4 * (0 - 1), 0.0], [2 / 4 * (4 - 3), 2 / 4 * (0 - 1)]])
    assert torch.allclose(vq.codebook.grad, expected)
    moved = vq.codebook.detach() - 0.1 * vq.codebook.grad  # a gradient step brings each code closer to its vector
    assert (moved - z.detach()).norm(dim=1).lt((vq.codebook.detach() - z.detach()).norm(dim=1)).all()


def test_commitment_loss_gradient_flows_only_into_z():
    vq, z = two_code_example(beta=0.25)
    vq(z).commitment_loss.backward()
    assert vq.codebook.grad is None  # sg[e]
    expected = 0.25 * 2 / 4 * (z.detach() - torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
    assert torch.allclose(z.grad, expected)


def test_ema_mode_has_no_codebook_loss_and_no_codebook_gradient():
    vq, z = two_code_example(ema=True)
    out = vq.eval()(z)
    assert out.codebook_loss.item() == 0.0
    assert out.loss.item() == pytest.approx(0.1875)
    assert not vq.codebook.requires_grad


# --- EMA update ------------------------------------------------------------------------------------------------------


def test_ema_update_matches_the_formula_by_hand():
    eps = 1e-5
    vq = quantizer_with_codebook(torch.tensor([[0.0, 0.0], [10.0, 10.0]]), ema=True, decay=0.5, eps=eps).train()
    # Start: cluster sizes N = (1, 1), sums m = the codes. Batch: (1,1), (3,3) -> code 0; (9,9) -> code 1.
    vq(torch.tensor([[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]]))
    # N = 0.5 * (1, 1) + 0.5 * (2, 1) = (1.5, 1.0)
    # m = 0.5 * ((0,0), (10,10)) + 0.5 * ((4,4), (9,9)) = ((2,2), (9.5,9.5))
    assert vq.ema_cluster_size.tolist() == pytest.approx([1.5, 1.0])
    assert vq.ema_embed_sum.tolist() == [[2.0, 2.0], [9.5, 9.5]]
    total = 2.5
    smoothed = [(1.5 + eps) / (total + 2 * eps) * total, (1.0 + eps) / (total + 2 * eps) * total]
    expected = [[2.0 / smoothed[0]] * 2, [9.5 / smoothed[1]] * 2]
    assert torch.allclose(vq.codebook.detach(), torch.tensor(expected), rtol=1e-6)
    # = mean of 0, 1, 3: with decay 0.5 the old code weighs as much as each new vector
    assert vq.codebook[0, 0].item() == pytest.approx(4 / 3, abs=1e-4)


def test_no_codebook_change_in_eval_mode():
    torch.manual_seed(4)
    vq = VectorQuantizer(8, 2, ema=True, restart_after=1, kmeans_init=True).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(50, 2))
    for key, value in vq.state_dict().items():
        assert torch.equal(value, before[key]), key


# --- k-means init ----------------------------------------------------------------------------------------------------

BLOB_CENTRES = torch.tensor([[-5.0, -5.0], [-5.0, 5.0], [5.0, -5.0], [5.0, 5.0]])


def blobs(n_per_blob=100, std=0.1):
    return (BLOB_CENTRES[:, None, :] + std * torch.randn(4, n_per_blob, 2)).reshape(-1, 2)


def test_kmeans_finds_four_separated_blobs():
    torch.manual_seed(5)
    centres = kmeans(blobs(), k=4, iters=10)
    distance_to_blob = torch.cdist(BLOB_CENTRES, centres)  # (4 blobs, 4 centres)
    assert distance_to_blob.min(dim=1).values.max() < 0.05  # every blob has a centre on it
    assert sorted(distance_to_blob.argmin(dim=1).tolist()) == [0, 1, 2, 3]  # and each a different one


def test_kmeans_init_on_the_first_training_batch_only():
    torch.manual_seed(6)
    vq = VectorQuantizer(4, 2, kmeans_init=True)
    vq.eval()(blobs())
    assert not vq.initialized  # eval mode does not initialise
    vq.train()(blobs())
    assert vq.initialized
    assert torch.cdist(BLOB_CENTRES, vq.codebook.detach()).min(dim=1).values.max() < 0.05
    codebook = vq.codebook.detach().clone()
    vq(blobs() + 100.0)  # a second batch: no re-initialisation (the gradient path would move codes, not k-means)
    assert torch.equal(vq.codebook.detach(), codebook)


def test_kmeans_with_fewer_vectors_than_codes_still_returns_k_centres():
    torch.manual_seed(7)
    vectors = torch.randn(3, 2)
    centres = kmeans(vectors, k=5, iters=3)
    assert centres.shape == (5, 2)
    assert torch.cdist(centres, vectors).min(dim=1).values.max() < 1e-6  # every centre sits on a data vector


# --- dead-code restart -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ema", [False, True])
def test_restart_revives_far_away_codes(ema):
    torch.manual_seed(8)
    near = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    far = torch.full((6, 2), 100.0) + torch.arange(6.0)[:, None]  # never the nearest code
    vq = quantizer_with_codebook(torch.cat([near, far]), ema=ema, restart_after=3).train()
    data = torch.randn(64, 2)

    for step in range(2):
        vq(data)
    assert vq.restarts.item() == 0 and vq.steps_unused[2:].tolist() == [2] * 6
    vq(data)  # third step unused -> re-seeded from this batch's vectors
    assert vq.restarts.item() == 6
    revived = vq.codebook.detach()[2:]
    assert torch.cdist(revived, data).min(dim=1).values.max() < 1e-6  # each sits on an encoder output
    assert usage_stats(vq(data).indices, 8).dead_codes == 0  # and is picked at once
    assert vq.steps_unused.max().item() == 0


def test_restart_keeps_the_gradient_path_working():
    torch.manual_seed(9)
    vq = quantizer_with_codebook(torch.cat([torch.zeros(1, 2), torch.full((3, 2), 50.0)]), restart_after=1).train()
    z = torch.randn(20, 2, requires_grad=True)
    out = vq(z)  # restarts codes 1..3 in place after the lookup
    assert vq.restarts.item() == 3
    out.loss.backward()  # in-place re-seeding must not break autograd
    assert z.grad is not None and vq.codebook.grad is not None


# --- usage statistics ------------------------------------------------------------------------------------------------


def test_usage_stats_uniform_over_k_codes_has_perplexity_k():
    indices = torch.tensor([0, 1, 2, 3] * 5)
    stats = usage_stats(indices, codebook_size=8)
    assert isinstance(stats, CodebookUsage)
    assert stats.perplexity == pytest.approx(4.0)
    assert stats.used_fraction == 0.5 and stats.dead_codes == 4
    assert stats.histogram.tolist() == [5, 5, 5, 5, 0, 0, 0, 0]


def test_usage_stats_single_code_and_known_histogram():
    assert usage_stats(torch.full((2, 4, 4), 3), 16).perplexity == pytest.approx(1.0)
    counts = torch.tensor([2.0, 1.0, 1.0])  # p = 1/2, 1/4, 1/4 -> H = 1.5 ln 2 -> exp(H) = 2^1.5
    assert perplexity(counts).item() == pytest.approx(2**1.5)
    assert perplexity(torch.tensor([3.0, 0.0, 3.0])).item() == pytest.approx(2.0)  # empty bins: no NaN


def test_usage_stats_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        usage_stats(torch.tensor([0, 4]), 4)
    with pytest.raises(TypeError, match="integer"):
        usage_stats(torch.tensor([0.0, 1.0]), 4)


def test_forward_perplexity_is_the_batch_histogram_perplexity():
    torch.manual_seed(10)
    vq = quantizer_with_codebook(torch.randn(16, 3)).eval()
    out = vq(torch.randn(4, 3, 6, 6))
    assert out.perplexity.item() == pytest.approx(usage_stats(out.indices, 16).perplexity)
    assert 1.0 <= out.perplexity.item() <= 16.0 and math.isfinite(out.perplexity.item())


# --- state -----------------------------------------------------------------------------------------------------------


def test_state_dict_round_trips_a_trained_quantizer():
    torch.manual_seed(11)
    vq = VectorQuantizer(8, 2, ema=True, restart_after=2).train()
    for _ in range(4):
        vq(torch.randn(30, 2))
    copy = VectorQuantizer(8, 2, ema=True, restart_after=2)
    copy.load_state_dict(vq.state_dict())
    assert bool(copy.initialized) and copy.restarts.item() == vq.restarts.item()
    assert torch.equal(copy.steps_unused, vq.steps_unused)
    assert torch.equal(copy.ema_cluster_size, vq.ema_cluster_size)
    z = torch.randn(10, 2)
    assert torch.equal(copy.eval().encode(z), vq.eval().encode(z))


# --- reference implementation ----------------------------------------------------------------------------------------


def test_same_indices_as_vector_quantize_pytorch_given_the_same_codebook():
    torch.manual_seed(12)
    codebook_size, dim = 64, 8
    ours = VectorQuantizer(codebook_size, dim, kmeans_init=False).eval()
    reference = ReferenceVQ(dim=dim, codebook_size=codebook_size).eval()
    # The reference keeps its codes in `_codebook.embed`, shape (num_codebooks=1, K, D); ours is (K, D).
    with torch.no_grad():
        reference._codebook.embed.copy_(ours.codebook[None])
    z = torch.randn(2, dim, 5, 7)
    # The reference wants channels last: (B, N, D) with N positions.
    tokens = z.permute(0, 2, 3, 1).reshape(2, 35, dim)
    ref_quantized, ref_indices, _ = reference(tokens)
    assert torch.equal(ours.encode(z).reshape(2, 35), ref_indices)
    assert torch.allclose(ours.decode(ours.encode(z)).permute(0, 2, 3, 1).reshape(2, 35, dim), ref_quantized,
                          atol=1e-6)


def test_nearest_codes_is_the_same_in_chunks_and_handles_no_rows():
    from facegen.quantize import nearest_codes

    g = torch.Generator().manual_seed(5)
    flat, codebook = torch.randn(10, 4, generator=g), torch.randn(7, 4, generator=g)
    brute = torch.cdist(flat, codebook).argmin(dim=1)
    assert torch.equal(nearest_codes(flat, codebook, chunk=3), brute)  # 4 chunks, the last one short
    assert nearest_codes(flat[:0], codebook).shape == (0,)
