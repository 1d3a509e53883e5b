"""CUDA-only bugs, caught on a CPU (issue 13, item 4).

Two kinds of bug broke the first GPU run and neither shows on a CPU-only machine:

1. A tensor built on the CPU (`torch.zeros(n)`, `torch.tensor([...])`) mixed with inputs on the GPU: "Expected all
   tensors to be on the same device". `fake_cuda()` (tests/fake_cuda.py) gives a pretend cuda:0 whose tensors hold
   real CPU numbers, and raises exactly where CUDA would. Every public function that builds tensors from its inputs
   is run with its inputs (and models) there: it must not raise, and what it returns must be there too (or on the
   CPU where the docstring promises the CPU), with a sensible dtype.
2. bf16 autocast reaching code that needs fp32 (`index_add_(): self (Float) and source (BFloat16)` in the EMA
   update). Each loss and each model's forward (+ the trainers' step functions) runs under CPU bf16 autocast here:
   no error, losses in fp32 and finite, fp32 state (EMA statistics, codebooks) stays fp32.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fake_cuda import FakeDeviceError, fake_cuda
from facegen import classifier as classifier_module
from facegen import metrics, quantize, sampling, vqgan_losses
from facegen.classifier import AttributeClassifier
from facegen.config import get_profile
from facegen.gpt import build_gpt, gpt_loss, validation_loss
from facegen.quantize import VectorQuantizer
from facegen.tokens import Vocabulary
from facegen.vqgan import VQGAN
from facegen.vqvae import VQVAE

VOCAB = Vocabulary(codebook_size=16, grid_size=4)  # 37-token sequences
GRID_PROFILE = get_profile("ci").replace(gpt={"n_layer": 1, "n_embd": 32, "n_head": 2})


# ------------------------------------------------------------------------------------------------ tiny models


def tiny_vqvae(seed: int = 0, codebook_size: int = 16) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(codebook_size=codebook_size, embed_dim=4, hidden=8, n_res_blocks=1, restart_after=1)


def tiny_classifier(seed: int = 0) -> AttributeClassifier:
    torch.manual_seed(seed)
    return AttributeClassifier(width=4)


def tiny_vqgan(seed: int = 0) -> VQGAN:
    torch.manual_seed(seed)
    return VQGAN(ch=32, ch_mult=(1, 1), num_res_blocks=1, attn_resolutions=(), z_channels=8, resolution=16,
                 embed_dim=4, n_embed=16)


def tiny_gpt(seed: int = 0):
    torch.manual_seed(seed)
    return build_gpt(GRID_PROFILE, VOCAB)


def images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Float images in [-1, 1], (n, 3, size, size)."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def uint8_images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def celeba_rows(n: int, seed: int = 0) -> np.ndarray:
    return np.where(np.random.default_rng(seed).random((n, 40)) < 0.4, 1, -1)


def sequences(n: int = 3, seed: int = 0) -> torch.Tensor:
    codes = torch.randint(0, VOCAB.codebook_size, (n, 16), generator=torch.Generator().manual_seed(seed))
    return VOCAB.encode_batch(celeba_rows(n, seed), codes)


@contextlib.contextmanager
def cpu_rng_only():
    """`torch.random.fork_rng(devices=[cuda])` saves the CUDA RNG state, which the fake device does not have: fork
    only the CPU generator (the sampler's seeding is tested elsewhere)."""
    fork = torch.random.fork_rng
    torch.random.fork_rng = lambda devices=None, **kwargs: fork(devices=[], **kwargs)
    try:
        yield
    finally:
        torch.random.fork_rng = fork


# =================================================================================== 1. the fake device itself


def test_the_fake_device_raises_where_cuda_would_and_only_there():
    with fake_cuda() as cuda:
        x = cuda.put(torch.arange(6.0))
        assert x.device.type == "cuda" and cuda.on_device(x * 2 + 1)
        with pytest.raises(FakeDeviceError, match="same device"):
            torch.where(torch.ones(6, dtype=torch.bool), x, x)  # a mask made on the CPU: the bug class
        assert cuda.on_device(torch.where(torch.ones(6, dtype=torch.bool, device=x.device), x, x))
        assert cuda.on_device(x + torch.tensor(1.0))  # a 0-dim CPU tensor mixes, as on CUDA
        assert cuda.on_device(x[torch.tensor([0, 2])])  # CPU indices into a CUDA tensor are allowed, as on CUDA
        assert x.cpu().device.type == "cpu" and x.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        layer = torch.nn.Linear(6, 2).to("cuda")
        layer(x[None]).sum().backward()
        assert cuda.on_device([layer.weight, layer.weight.grad])
        with pytest.raises(FakeDeviceError):
            torch.nn.Linear(6, 2)(x[None])  # a module left on the CPU


# ========================================================================================== tokens (tokens.py)


def test_labels_and_attribute_dropout_follow_the_ids_device():
    ids = sequences()
    with fake_cuda() as cuda:
        on = cuda.put(ids)
        labels = VOCAB.labels(on)  # the bug ce3b449 fixed: loss_mask() was built on the CPU
        dropped = VOCAB.drop_attributes(on, 0.5, 0.5, torch.Generator().manual_seed(0))
        assert cuda.on_device([labels, dropped])
        assert labels.dtype == torch.long and dropped.dtype == ids.dtype
        assert torch.equal(cuda.real(labels), VOCAB.labels(ids))
        assert torch.equal(cuda.real(dropped), VOCAB.drop_attributes(ids, 0.5, 0.5, torch.Generator().manual_seed(0)))


def test_input_free_builders_give_cpu_tensors_of_the_right_dtype():
    assert VOCAB.loss_mask().dtype == torch.bool and VOCAB.prompt_ids({"Smiling": 1}).dtype == torch.long
    assert VOCAB.attribute_ids(None).dtype == torch.long and sequences().dtype == torch.long


def test_encode_batch_of_codes_on_the_device_stays_there():
    codes = torch.randint(0, VOCAB.codebook_size, (2, 16))
    with fake_cuda() as cuda:
        assert cuda.on_device(VOCAB.encode_batch(celeba_rows(2), cuda.put(codes)))


# ===================================================================================== quantizer (quantize.py)


@pytest.mark.parametrize("ema", [True, False])
def test_quantizer_training_forward_with_restarts_stays_on_the_device(ema):
    torch.manual_seed(0)
    quantizer = VectorQuantizer(32, 4, ema=ema, restart_after=1)  # 32 codes for 18 vectors: restarts happen
    z = torch.randn(2, 4, 3, 3)
    with fake_cuda() as cuda:
        quantizer.to("cuda").train()
        zc = cuda.put(z.requires_grad_())
        for _ in range(3):
            out = quantizer(zc)
        out.loss.backward()
        assert cuda.on_device(out) and cuda.on_device(dict(quantizer.state_dict()))
        assert int(quantizer.restarts) > 0
        assert out.indices.dtype == torch.long and out.loss.dtype == torch.float32
        indices = quantizer.encode(zc)
        assert cuda.on_device([indices, quantizer.decode(indices), quantizer.decode(indices.flatten())])
        assert indices.dtype == torch.long


def test_codebook_helpers_follow_their_inputs():
    torch.manual_seed(0)
    vectors, codebook = torch.randn(50, 3), torch.randn(8, 3)
    with fake_cuda() as cuda:
        v, c = cuda.put(vectors), cuda.put(codebook)
        nearest = quantize.nearest_codes(v, c)
        assert cuda.on_device(nearest) and nearest.dtype == torch.long
        assert cuda.on_device(quantize.nearest_codes(v[:0], c))  # the empty case builds its own tensor
        assert cuda.on_device(quantize.kmeans(v, 4, iters=2))
        usage = quantize.usage_stats(nearest, 8)
        assert cuda.on_device(usage.histogram) and isinstance(usage.perplexity, float)
        p = quantize.perplexity(usage.histogram)
        assert cuda.on_device(p) and p.dtype == torch.float32


# ==================================================================================== VQGAN losses and steps


def test_vqgan_losses_follow_their_inputs():
    torch.manual_seed(0)
    classifier = tiny_classifier().eval()
    discriminator = vqgan_losses.NLayerDiscriminator(ndf=4, n_layers=2)
    last = torch.nn.Conv2d(3, 3, 1)
    with fake_cuda() as cuda:
        classifier.to("cuda")
        discriminator.to("cuda")
        last.to("cuda")
        x = cuda.put(images(2))
        recon = last(x)
        real, fake = discriminator(x), discriminator(recon)
        assert cuda.on_device([real, vqgan_losses.hinge_d_loss(real, fake),
                               vqgan_losses.generator_adversarial_loss(fake)])
        perceptual = vqgan_losses.ClassifierPerceptualLoss(classifier)
        distance = perceptual(recon, x)
        assert cuda.on_device(distance) and distance.dtype == torch.float32 and distance.shape == (2,)
        for gan_on in (False, True):
            terms = vqgan_losses.generator_loss(recon, x, perceptual, discriminator, last.weight, 0.1, 0.8, gan_on)
            assert cuda.on_device(terms), gan_on  # the zeros written before disc_start included
            assert all(value.dtype == torch.float32 for value in terms.values())
        terms["loss"].backward()
        assert cuda.on_device(last.weight.grad)


def test_small_vqgan_step_functions_stay_on_the_device():
    from facegen import vqgan_training

    cfg = get_profile("ci").vqgan
    model, classifier = tiny_vqgan(), tiny_classifier().eval()
    discriminator = vqgan_losses.NLayerDiscriminator(ndf=4, n_layers=2)
    with fake_cuda() as cuda:
        model.to("cuda")
        discriminator.to("cuda")
        perceptual = vqgan_losses.ClassifierPerceptualLoss(classifier.to("cuda"))
        x = cuda.put(images(2, 16))
        with torch.no_grad():
            vqgan_training.init_codebook(model, x)
        terms = vqgan_training.generator_terms(model, discriminator, perceptual, x, True, cfg)
        terms["loss"].backward()
        d_loss = vqgan_training.discriminator_loss(discriminator, x, terms["reconstruction"])
        counts = torch.bincount(terms["indices"].flatten(), minlength=model.n_embed)
        vqgan_training.restart_dead_codes(model, counts, terms["latents"])
        assert cuda.on_device([terms, d_loss, model.quantize.embedding.weight])
        pairs = vqgan_training.recon_pairs(model, uint8_images(2, 16))  # promised on the CPU, for saving
        assert pairs.device.type == "cpu" and not cuda.on_device(pairs)


def test_gan_decoder_step_functions_stay_on_the_device():
    from facegen import gan_decoder

    cfg = get_profile("ci").gan_decoder
    base, tuned, classifier = tiny_vqvae(), tiny_vqvae(), tiny_classifier().eval()
    discriminator = vqgan_losses.NLayerDiscriminator(ndf=4, n_layers=2)
    with fake_cuda() as cuda:
        for module in (base, tuned, classifier, discriminator):
            module.to("cuda")
        gan_decoder.freeze_tokens(tuned)
        perceptual = vqgan_losses.ClassifierPerceptualLoss(classifier)
        x = cuda.put(images(2))
        terms = gan_decoder.decoder_terms(tuned, tuned.decoder, discriminator, perceptual, x, True,
                                          gan_decoder.decoder_last_layer(tuned), cfg)
        terms["loss"].backward()
        assert cuda.on_device(terms)
        assert gan_decoder.recon_pairs(base.eval(), tuned.eval(), uint8_images(2)).device.type == "cpu"


# ===================================================================================================== metrics


def test_image_metrics_follow_their_inputs():
    x, y = images(2), images(2, seed=1)
    with fake_cuda() as cuda:
        xc, yc = cuda.put(x), cuda.put(y)
        for value in (metrics.psnr(xc, yc), metrics.ssim(xc, yc), metrics.psnr(xc, yc, reduction="none"),
                      metrics.laplacian_sharpness(xc)):
            assert cuda.on_device(value) and value.dtype == torch.float32
        assert torch.allclose(cuda.real(metrics.ssim(xc, yc)), metrics.ssim(x, y))


def test_reconstruction_metrics_run_on_the_tokenizers_device():
    vqvae = tiny_vqvae().eval()
    expected = metrics.reconstruction_metrics(vqvae, uint8_images(6), 16, batch_size=4)
    with fake_cuda():
        vqvae.to("cuda")
        got = metrics.reconstruction_metrics(vqvae, uint8_images(6), 16, batch_size=4)  # images on the CPU
    assert got == pytest.approx(expected)


def test_classifier_judging_runs_on_the_classifiers_device_and_returns_cpu_float():
    classifier = tiny_classifier().eval()
    faces, other = uint8_images(6), uint8_images(6, seed=1)
    expected = metrics.classifier_outputs(classifier, faces, batch_size=4)
    expected_fd = metrics.frechet_feature_distance(classifier, faces, other, batch_size=4)
    with fake_cuda() as cuda:
        classifier.to("cuda")
        logits = metrics.classifier_outputs(classifier, faces, batch_size=4)
        assert logits.device.type == "cpu" and logits.dtype == torch.float32  # promised: CPU float32
        assert torch.allclose(logits, expected, atol=1e-5)
        assert metrics.frechet_feature_distance(classifier, faces, other, batch_size=4) == pytest.approx(expected_fd)
        accuracy = metrics.attribute_accuracy(classifier, faces, {"Smiling": 1})
        assert 0.0 <= accuracy["mean"] <= 1.0
        features = cuda.put(torch.randn(10, 3, generator=torch.Generator().manual_seed(0)))
        mean, cov = metrics.feature_statistics(features)
        assert cuda.on_device([mean, cov]) and mean.dtype == cov.dtype == torch.float64
        assert metrics.frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-9)
        targets = cuda.put(torch.tensor([[1, 0], [0, -1]]))
        assert metrics.requested_targets(targets, 2, ("Smiling", "Male")).device == targets.device
        predicted = cuda.put(torch.tensor([[True, False], [True, True]]))
        assert metrics.prediction_accuracy(predicted, targets, ("Smiling", "Male"))["mean"] == pytest.approx(0.75)
        assert metrics.unigram_entropy(cuda.put(torch.tensor([0, 1, 1, 3])), 4) > 0


def test_classifier_helpers_follow_their_inputs():
    rows = torch.as_tensor(celeba_rows(8))
    model = tiny_classifier()
    with fake_cuda() as cuda:
        targets = classifier_module.targets_from_celeba(cuda.put(rows))
        weights = classifier_module.positive_weights(targets)
        assert cuda.on_device([targets, weights])
        assert targets.dtype == torch.long and weights.dtype == torch.float32
        balanced = classifier_module.balanced_accuracy(targets.bool(), targets)
        assert cuda.on_device(balanced) and balanced.is_floating_point()
        shifted = classifier_module.random_shift(cuda.put(images(2)), 2, torch.Generator().manual_seed(0))
        assert cuda.on_device(shifted)
        model.to("cuda")
        logits = model(cuda.put(images(2)))
        loss = F.binary_cross_entropy_with_logits(logits, targets[:2].float(), pos_weight=weights)
        assert cuda.on_device(loss) and loss.dtype == torch.float32
        report = classifier_module.evaluate_classifier(model.eval(), uint8_images(4), rows[:4])
        assert 0.0 <= report["mean_accuracy"] <= 1.0


# ====================================================================================================== sampling


def test_image_grammar_masks_on_the_scores_device():
    grammar = sampling.ImageGrammar(VOCAB)
    with fake_cuda() as cuda:
        for length in (VOCAB.image_start, VOCAB.end_position):
            ids = cuda.put(torch.zeros(2, length, dtype=torch.long))
            scores = cuda.put(torch.zeros(2, VOCAB.size))
            masked = grammar(ids, scores)
            assert cuda.on_device(masked) and masked.dtype == torch.float32
            allowed = torch.isfinite(cuda.real(masked[0]))
            assert torch.equal(allowed, grammar.allowed(length, VOCAB.size))


def test_guided_sampling_and_completion_run_on_the_models_device():
    model = tiny_gpt().eval()
    vqvae = tiny_vqvae(codebook_size=VOCAB.codebook_size).eval()
    with torch.random.fork_rng():
        expected = sampling.sample_codes(model, VOCAB, 2, {"Smiling": 1}, guidance_scale=2.0, seed=0)
    prefix = expected[:1]
    with fake_cuda() as cuda, cpu_rng_only():
        model.to("cuda")
        vqvae.to("cuda")
        inputs = sampling.generation_inputs(model, VOCAB, 2, {"Smiling": 1}, guidance_scale=2.0)
        assert cuda.on_device([inputs["input_ids"], inputs["attention_mask"], inputs["negative_prompt_ids"],
                               inputs["negative_prompt_attention_mask"]])
        assert cuda.on_device(sampling.prompt_batch(VOCAB, 2, device=inputs["input_ids"].device))
        codes = sampling.sample_codes(model, VOCAB, 2, {"Smiling": 1}, guidance_scale=2.0, seed=0)
        assert codes.device.type == "cpu" and codes.dtype == torch.long
        assert torch.equal(codes, expected)  # same numbers as on the CPU
        faces = sampling.sample_faces(model, VOCAB, vqvae, 2, None, seed=1, prefix_codes=prefix, keep_tokens=4)
        assert faces.device.type == "cpu" and faces.shape == (2, 3, 32, 32)


def test_the_explorer_generates_with_models_on_the_device():
    from facegen.widgets import Explorer

    model = tiny_gpt().eval()
    vqvae = tiny_vqvae(codebook_size=VOCAB.codebook_size).eval()
    with fake_cuda(), cpu_rng_only():
        model.to("cuda")
        vqvae.to("cuda")
        explorer = Explorer(model, VOCAB, vqvae, valid_images=uint8_images(3), batch_size=1)
        explorer.complete.value = True
        explorer.keep_rows.value = 1
        result = explorer.generate()
        assert result is not None, explorer.status.value
        assert result.device.type == "cpu" and len(explorer.faces.value) > 0
        ranked = Explorer(model, VOCAB, vqvae, batch_size=4, ranker=tiny_classifier().to("cuda").eval())
        ranked.best_of.value, ranked.toggles["Smiling"].value = 2, 1  # best of 2, ranked on the device
        result = ranked.generate()
        assert result is not None and "each the best of 2" in ranked.status.value, ranked.status.value
        assert result.device.type == "cpu" and result.shape == (4, 3, 32, 32)


# ============================================================================================ GPT and tokenizing


def test_gpt_loss_and_validation_run_on_the_models_device():
    model = tiny_gpt()
    ids = sequences(4)
    with fake_cuda() as cuda:
        model.to("cuda")
        loss = gpt_loss(model, cuda.put(ids), VOCAB)
        assert cuda.on_device(loss) and loss.dtype == torch.float32
        loss.backward()
        assert isinstance(validation_loss(model, ids, VOCAB, batch_size=2), float)  # rows on the CPU: moved


def test_tokenize_split_encodes_on_the_vqvaes_device():
    from facegen.tokenize_dataset import tokenize_split

    vqvae = tiny_vqvae().eval()
    expected = tokenize_split(vqvae, uint8_images(5), batch_size=2, progress=False)
    with fake_cuda():
        vqvae.to("cuda")
        codes = tokenize_split(vqvae, uint8_images(5), batch_size=2, progress=False)
    assert codes.device.type == "cpu" and codes.dtype == torch.int16 and torch.equal(codes, expected)


# ================================================================================ 2. CPU bf16 autocast


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def fp32_and_finite(*values: torch.Tensor) -> bool:
    return all(v.dtype == torch.float32 and bool(torch.isfinite(v).all()) for v in values)


def test_quantizer_training_under_autocast_keeps_its_statistics_in_fp32():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(32, 4, ema=True, restart_after=1).train()
    z = torch.randn(2, 4, 3, 3)
    with autocast():
        for _ in range(3):  # k-means init, EMA updates, restarts; z in bf16, as an encoder under autocast makes it
            out = quantizer(z.to(torch.bfloat16))
    for name, buffer in quantizer.named_buffers():
        if buffer.is_floating_point():
            assert buffer.dtype == torch.float32, name
    assert quantizer.codebook.dtype == torch.float32 and fp32_and_finite(out.loss, out.perplexity)


def test_quantizer_under_autocast_picks_the_same_codes_as_in_fp32():
    """Nearest-code distances in bf16 (8 bits of mantissa) would pick a wrong code wherever two codes are nearly as
    close: the quantizer must compute them in fp32 under autocast, in forward as in encode."""
    torch.manual_seed(0)
    quantizer = VectorQuantizer(64, 8, kmeans_init=False).eval()
    with torch.no_grad():
        quantizer.codebook.normal_()
    z = torch.randn(32, 8, 8, 8)  # 2,048 vectors
    expected = quantizer(z).indices
    with autocast():
        assert torch.equal(quantizer(z).indices, expected)
        assert torch.equal(quantizer.encode(z), expected)


def test_vqvae_forward_and_loss_under_autocast():
    model = tiny_vqvae().train()
    x = images(2)
    with autocast():
        recon, vq = model(x)
        loss = F.mse_loss(recon, x) + vq.loss
    loss.backward()
    assert fp32_and_finite(loss, vq.loss)
    assert model.quantizer.ema_embed_sum.dtype == torch.float32


def test_vqgan_and_its_losses_under_autocast():
    from facegen import vqgan_training

    cfg = get_profile("ci").vqgan
    model, classifier = tiny_vqgan().train(), tiny_classifier().eval()
    discriminator = vqgan_losses.NLayerDiscriminator(ndf=4, n_layers=2)
    perceptual = vqgan_losses.ClassifierPerceptualLoss(classifier)
    x = images(2, 16)
    with autocast():
        terms = vqgan_training.generator_terms(model, discriminator, perceptual, x, True, cfg)
        d_loss = vqgan_training.discriminator_loss(discriminator, x, terms["reconstruction"])
        logits = discriminator(x)
        plain = [vqgan_losses.hinge_d_loss(logits, logits), vqgan_losses.generator_adversarial_loss(logits)]
    terms["loss"].backward()
    assert fp32_and_finite(terms["loss"], terms["l1"], terms["perceptual"], terms["g_loss"], terms["vq"], d_loss,
                           *plain)
    assert model.quantize.embedding.weight.dtype == torch.float32


def test_gan_decoder_step_under_autocast():
    from facegen import gan_decoder

    cfg = get_profile("ci").gan_decoder
    model, classifier = tiny_vqvae(), tiny_classifier().eval()
    discriminator = vqgan_losses.NLayerDiscriminator(ndf=4, n_layers=2)
    gan_decoder.freeze_tokens(model)
    with autocast():
        terms = gan_decoder.decoder_terms(model, model.decoder, discriminator,
                                          vqgan_losses.ClassifierPerceptualLoss(classifier), images(2), True,
                                          gan_decoder.decoder_last_layer(model), cfg)
    terms["loss"].backward()
    assert fp32_and_finite(terms["loss"], terms["gan_weight"])


def test_classifier_and_gpt_losses_under_autocast():
    model = tiny_classifier().train()
    targets = classifier_module.targets_from_celeba(torch.as_tensor(celeba_rows(2)))
    gpt = tiny_gpt().train()
    with autocast():
        logits = model(images(2))
        bce = F.binary_cross_entropy_with_logits(logits, targets.float(),
                                                 pos_weight=classifier_module.positive_weights(targets))
        lm = gpt_loss(gpt, sequences(2), VOCAB)
    (bce + lm).backward()
    assert fp32_and_finite(bce, lm)


# ======================================================================================== the pipeline's loaders


def test_loaders_put_models_on_the_device_asked_for_and_default_to_the_profiles(tmp_path, monkeypatch):
    from facegen import pipeline
    from facegen.classifier import classifier_folder
    from facegen.vqvae_training import MODEL_DIR, vqvae_folder

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path))
    profile = get_profile("ci")
    tiny_vqvae().save_pretrained(vqvae_folder(profile) / MODEL_DIR)
    tiny_classifier().save_pretrained(classifier_folder(profile))
    assert profile.device == "cpu"  # no GPU here: the default
    assert next(pipeline.ensure_vqvae(profile, progress=False).parameters()).device.type == "cpu"
    with fake_cuda() as cuda:
        vqvae = pipeline.ensure_vqvae(profile, progress=False, device="cuda")
        classifier = pipeline.ensure_classifier(profile, progress=False, device="cuda")
        assert cuda.on_device(list(vqvae.parameters()) + list(classifier.parameters()))
        assert not vqvae.training and not classifier.training
