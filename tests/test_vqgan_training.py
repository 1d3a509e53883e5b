import pytest
import torch

from facegen import metrics
from facegen.classifier import AttributeClassifier
from facegen.config import get_profile, training_recipe
from facegen.data.transforms import from_uint8
from facegen.vqgan import VQGAN
from facegen.vqgan_training import (discriminator_loss, init_codebook, load_trained_vqgan, perceptual_loss_for,
                                    random_crops, restart_dead_codes, train_vqgan, vqgan_folder)
from helpers import square_images

TINY = get_profile("ci").replace(
    data={"image_size": 32},
    vqgan={"ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (), "z_channels": 32,
           "embed_dim": 8, "n_embed": 16, "steps": 6, "disc_start": 3, "batch_size": 4, "crop_size": 16,
           "disc_channels": 8, "disc_layers": 2, "restart_every": 2, "val_every": 3})




def tiny_classifier() -> AttributeClassifier:
    torch.manual_seed(1)
    return AttributeClassifier(width=8).eval()


def tiny_vqgan() -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], z_channels=32, resolution=32,
                 embed_dim=8, n_embed=16)


def test_vqgan_folder_is_under_the_profile_artifacts():
    profile = get_profile("cpu")
    assert vqgan_folder(profile) == profile.artifacts / "vqgan"


def test_random_crops_are_windows_of_each_image():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    crops = random_crops(images, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (2, 3, 4, 4)
    for image, crop in zip(images, crops):
        top, left = divmod(int(crop[0, 0, 0].item()) % 64, 8)  # values encode their position
        assert torch.equal(crop, image[:, top:top + 4, left:left + 4])
    assert random_crops(images, None, torch.Generator()) is images
    with pytest.raises(ValueError, match="crop_size 9 is larger"):
        random_crops(images, 9, torch.Generator())


def test_init_codebook_puts_codes_on_the_encoder_outputs():
    model = tiny_vqgan()
    x = from_uint8(square_images(8))
    init_codebook(model, x)
    latents = model.encode_latents(x).detach().permute(0, 2, 3, 1).reshape(-1, 8)
    codebook = model.quantize.embedding.weight
    # every code is the mean of the latents nearest to it, so it lies inside their range
    assert (codebook.min(0).values >= latents.min(0).values - 1e-5).all()
    assert (codebook.max(0).values <= latents.max(0).values + 1e-5).all()
    assert len(torch.unique(model.encode_indices(x))) > 4  # far more than taming's init, which uses ~1 code here


def test_restart_dead_codes_reseeds_exactly_the_unused_codes():
    model = tiny_vqgan()
    before = model.quantize.embedding.weight.detach().clone()
    counts = torch.ones(16, dtype=torch.long)
    counts[[3, 7]] = 0
    latents = torch.randn(2, 8, 4, 4)
    assert restart_dead_codes(model, counts, latents) == 2
    after = model.quantize.embedding.weight.detach()
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, 8)
    for code in range(16):
        if code in (3, 7):
            assert (vectors - after[code]).abs().sum(1).min() < 1e-6  # now one of the encoder outputs
        else:
            assert torch.equal(after[code], before[code])


def test_reconstruction_metrics_of_a_vqgan_match_a_direct_computation():
    model = tiny_vqgan().eval()
    images = square_images(5, seed=1)
    result = metrics.reconstruction_metrics(model, images, model.n_embed, batch_size=2)
    x = from_uint8(images)
    with torch.no_grad():
        recon, _, indices = model(x)
    assert result["psnr"] == pytest.approx(float(metrics.psnr(recon.clamp(-1, 1), x)), rel=1e-5)
    assert result["ssim"] == pytest.approx(float(metrics.ssim(recon.clamp(-1, 1), x)), rel=1e-4)
    assert result["usage"] == pytest.approx(len(torch.unique(indices)) / 16)
    expected = metrics.laplacian_sharpness(recon.clamp(-1, 1)).mean() / metrics.laplacian_sharpness(x).mean()
    assert result["sharpness"] == pytest.approx(float(expected), rel=1e-5)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    train, val = square_images(16), square_images(4, seed=1)
    classifier = tiny_classifier()
    whole = train_vqgan(TINY, train, val, classifier=classifier, folder=tmp_path / "whole", progress=False)
    first = train_vqgan(TINY, train, val, classifier=classifier, folder=tmp_path / "split", stop_after=4,
                        progress=False)
    assert len(first.history) == 4 and not (tmp_path / "split" / "model").exists()
    resumed = train_vqgan(TINY, train, val, classifier=classifier, folder=tmp_path / "split", progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert "d_loss" in whole.history[-1] and "d_loss" not in whole.history[2]  # the GAN starts at disc_start
    assert whole.history[-1]["gan_weight"] > 0 and whole.history[0]["gan_weight"] == 0
    for net in ("model", "discriminator"):
        for key, value in getattr(whole, net).state_dict().items():
            assert torch.equal(getattr(resumed, net).state_dict()[key], value), (net, key)
    assert (tmp_path / "split" / "samples" / "step_000006.png").is_file()
    loaded = load_trained_vqgan(tmp_path / "split")
    for key, value in whole.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training


def test_training_lowers_the_reconstruction_error(tmp_path):
    profile = TINY.replace(vqgan={"steps": 30, "disc_start": 25, "val_every": 15, "lr": 2e-3})
    run = train_vqgan(profile, square_images(64), square_images(8, seed=1), classifier=tiny_classifier(), folder=tmp_path,
                      progress=False)
    first = sum(h["l1"] for h in run.history[:5]) / 5
    last = sum(h["l1"] for h in run.history[-5:]) / 5
    assert last < 0.6 * first
    assert run.validation[-1]["psnr"] > run.validation[0]["psnr"]


def test_load_trained_vqgan_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected config.json and model.safetensors"):
        load_trained_vqgan(tmp_path)


def test_ensure_vqgan_trains_once_then_loads(tmp_path, monkeypatch, capsys):
    import facegen.vqgan_training as training
    from facegen.pipeline import ensure_vqgan

    import facegen.pipeline as pipeline

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path))
    perceptual = object()  # the perceptual network ensure_vqgan hands over (the classifier, unless LPIPS is there)
    monkeypatch.setattr(pipeline, "perceptual_classifier", lambda profile, progress: perceptual)
    calls = []

    def fake_train(profile, classifier, progress=True):  # the loop is tested above; here: what ensure_vqgan does
        assert classifier is perceptual
        calls.append(profile.name)
        run = training.VQGANRun(model=tiny_vqgan(), discriminator=None, folder=training.vqgan_folder(profile))
        training.save_trained(run, recipe=training_recipe(profile.vqgan))
        return run

    monkeypatch.setattr(training, "train_vqgan", fake_train)
    first = ensure_vqgan(TINY, progress=False)
    assert calls == ["ci"] and "[facegen] training the 'ci' small VQGAN" in capsys.readouterr().out
    second = ensure_vqgan(TINY, progress=False)
    assert calls == ["ci"] and capsys.readouterr().out == ""  # present: loaded, not retrained
    assert all(torch.equal(second.state_dict()[k], v) for k, v in first.state_dict().items())
    from facegen.errors import ArtifactError

    with pytest.raises(ArtifactError, match=rf"small VQGAN .* \(trained -> now: steps {TINY.vqgan.steps} -> 7\)"
                                            r".*`facegen train-vqgan --restart --profile ci`"):
        ensure_vqgan(TINY.replace(vqgan={"steps": 7}), progress=False)
    assert calls == ["ci"]


def test_cli_train_vqgan_reports_the_run(tmp_path, monkeypatch, capsys):
    import facegen.vqgan_training as training
    from facegen.cli import main

    import facegen.pipeline as pipeline

    seen, perceptual = {}, object()
    monkeypatch.setattr(pipeline, "perceptual_classifier", lambda profile: perceptual)  # what the CLI hands over

    def fake_train(profile, classifier, steps=None, resume=True):
        seen.update(profile=profile.name, steps=steps, resume=resume, classifier=classifier)
        return training.VQGANRun(model=None, discriminator=None, folder=tmp_path, perceptual="P", history=[{}] * 3,
                                 validation=[{"psnr": 21.5, "ssim": 0.61, "usage": 0.5}], seconds=90)

    monkeypatch.setattr(training, "train_vqgan", fake_train)
    assert main(["train-vqgan", "--profile", "ci", "--steps", "3", "--restart"]) == 0
    assert seen == {"profile": "ci", "steps": 3, "resume": False, "classifier": perceptual}
    out = capsys.readouterr().out
    assert "3 steps, 1.5 min; validation PSNR 21.50 dB, SSIM 0.610, 50% of codes used; perceptual loss: P" in out


def test_perceptual_loss_for_uses_the_given_classifier_or_the_profiles(tmp_path, monkeypatch):
    import facegen.vqgan_losses as losses
    from facegen.classifier import classifier_folder, load_classifier

    monkeypatch.setattr(losses, "lpips_available", lambda: False)
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path))
    given = tiny_classifier()
    loss = perceptual_loss_for(TINY, given)
    assert loss.name == "classifier feature distance (not LPIPS)" and loss.classifier is given
    with pytest.raises(FileNotFoundError, match="attribute classifier"):  # the profile's is not trained yet
        perceptual_loss_for(TINY, None)
    given.save_pretrained(classifier_folder(TINY))
    loaded = perceptual_loss_for(TINY, None).classifier
    assert torch.equal(loaded.head.weight, given.head.weight)


def test_discriminator_loss_is_the_hinge_loss_and_teaches_it_to_tell_real_from_fake():
    from facegen.vqgan_losses import NLayerDiscriminator, hinge_d_loss

    torch.manual_seed(0)
    disc = NLayerDiscriminator(ndf=8, n_layers=2).train()
    optimizer = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.9))
    real = from_uint8(square_images(8))
    fake = torch.zeros_like(real, requires_grad=True)  # flat grey: easy to tell apart
    first = discriminator_loss(disc, real, fake)
    with torch.no_grad():
        assert first.item() == pytest.approx(hinge_d_loss(disc(real), disc(fake)).item(), rel=1e-5)
    first.backward()
    assert fake.grad is None  # the reconstructions are detached: only the discriminator learns from this loss
    losses = []
    for _ in range(30):
        loss = discriminator_loss(disc, real, fake)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert discriminator_loss(disc, real, fake).dtype == torch.float32