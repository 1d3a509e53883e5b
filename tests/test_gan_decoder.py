import pytest
import torch

from facegen import metrics
from facegen.classifier import AttributeClassifier
from facegen.config import get_profile, training_recipe
from facegen.train.engine import SettingsChanged
from facegen.data.transforms import from_uint8
from facegen.gan_decoder import (BASE_FILE, GANDecoderRun, decoder_last_layer, freeze_tokens, gan_decoder_folder,
                                 gan_decoder_stale_reason, load_gan_decoder, save_trained, train_gan_decoder)
from facegen.tokenize_dataset import vqvae_fingerprint
from facegen.vqvae import VQVAE
from helpers import square_images

TINY = get_profile("ci").replace(
    data={"image_size": 32},
    gan_decoder={"steps": 6, "disc_start": 3, "batch_size": 4, "disc_channels": 8, "disc_layers": 2,
                 "ema_decay": 0.5, "val_every": 3, "lr": 1e-3})




def tiny_vqvae(seed: int = 0) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1).eval()


def tiny_classifier() -> AttributeClassifier:
    torch.manual_seed(1)
    return AttributeClassifier(width=8).eval()


def train(tmp_path, name="run", profile=TINY, base=None, **kwargs):
    return train_gan_decoder(profile, vqvae=base or tiny_vqvae(), train_images=square_images(16), val_images=square_images(4, 1),
                             classifier=tiny_classifier(), folder=tmp_path / name, progress=False, **kwargs)


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_gan_decoder_folder_is_under_the_profile_artifacts():
    assert gan_decoder_folder(TINY) == TINY.artifacts / "gan_decoder"


def test_only_the_decoder_learns_so_the_tokens_stay_the_same(tmp_path):
    base = tiny_vqvae()
    run = train(tmp_path, base=base)
    assert states_equal(run.model.encoder, base.encoder) and states_equal(run.model.quantizer, base.quantizer)
    assert not states_equal(run.model.decoder, base.decoder)
    x = from_uint8(square_images(4, seed=2))
    assert torch.equal(run.averaged.encode_indices(x), base.encode_indices(x))
    assert not any(p.requires_grad for p in run.model.encoder.parameters())


def test_freeze_tokens_keeps_the_ema_codebook_still_in_a_forward_pass():
    model = tiny_vqvae().train()
    codebook = [t.clone() for t in model.quantizer.state_dict().values()]
    freeze_tokens(model)
    model(from_uint8(square_images(4)))  # in training mode the quantizer would update its EMA codebook here
    assert all(torch.equal(a, b) for a, b in zip(codebook, model.quantizer.state_dict().values()))


def test_decoder_last_layer_is_the_layer_that_paints_the_pixels():
    model = tiny_vqvae()
    weight = decoder_last_layer(model)
    assert weight.shape[1] == 3  # ConvTranspose2d weights are (in, out, kH, kW): out = RGB
    z = torch.randn(1, 8, 4, 4)
    before = model.decoder(z)
    with torch.no_grad():
        weight.zero_()
    after = model.decoder(z)
    bias = model.decoder.net[-1].bias.reshape(1, 3, 1, 1)
    assert not torch.equal(before, after) and torch.allclose(after, bias.expand_as(after))


def test_the_averaged_decoder_is_the_raw_one_at_decay_0_and_the_base_at_decay_1(tmp_path):
    base = tiny_vqvae()
    latest = train(tmp_path, "d0", profile=TINY.replace(gan_decoder={"ema_decay": 0.0}), base=base)
    assert states_equal(latest.averaged.decoder, latest.model.decoder)
    frozen = train(tmp_path, "d1", profile=TINY.replace(gan_decoder={"ema_decay": 1.0}), base=base)
    assert states_equal(frozen.averaged.decoder, base.decoder)
    assert not states_equal(frozen.model.decoder, base.decoder)
    halfway = train(tmp_path, "dhalf", base=base)  # decay 0.5: strictly between, for at least one weight
    raw, avg, start = (m.decoder.net[-1].weight for m in (halfway.model, halfway.averaged, base))
    assert not torch.equal(avg, raw) and not torch.equal(avg, start)


def test_the_gan_term_starts_at_disc_start(tmp_path):
    run = train(tmp_path)
    assert [("d_loss" in h) for h in run.history] == [False, False, False, True, True, True]
    assert all(h["gan_weight"] == 0 for h in run.history[:3]) and all(h["gan_weight"] > 0 for h in run.history[3:])


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = train(tmp_path, "whole")
    first = train(tmp_path, "split", stop_after=4)
    assert len(first.history) == 4 and not (tmp_path / "split" / "model").exists()
    resumed = train(tmp_path, "split")
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    for net in ("model", "averaged", "discriminator"):
        assert states_equal(getattr(resumed, net), getattr(whole, net)), net
    assert (tmp_path / "split" / "samples" / "step_000006.png").is_file()


def test_resuming_with_another_base_vqvae_is_refused(tmp_path):
    train(tmp_path, "run", stop_after=3)
    with pytest.raises(SettingsChanged, match="changed: base_fingerprint"):
        train(tmp_path, "run", base=tiny_vqvae(seed=1))


def test_training_lowers_the_reconstruction_error(tmp_path):
    profile = TINY.replace(gan_decoder={"steps": 40, "disc_start": 35, "val_every": 20, "lr": 3e-3,
                                        "ema_decay": 0.0})
    run = train_gan_decoder(profile, vqvae=tiny_vqvae(), train_images=square_images(64), val_images=square_images(8, 1),
                            classifier=tiny_classifier(), folder=tmp_path, progress=False)
    first = sum(h["l1"] for h in run.history[:5]) / 5
    last = sum(h["l1"] for h in run.history[-10:-5]) / 5  # before the GAN term starts
    assert last < 0.7 * first
    assert run.validation[-1]["psnr"] > run.validation[0]["psnr"]


def test_saved_model_is_a_vqvae_with_the_averaged_decoder_and_knows_its_base(tmp_path):
    base = tiny_vqvae()
    run = train(tmp_path, base=base)
    loaded = load_gan_decoder(tmp_path / "run")
    assert isinstance(loaded, VQVAE) and not loaded.training
    assert states_equal(loaded, run.averaged)
    x = from_uint8(square_images(3, seed=3))
    assert torch.allclose(loaded.decode_indices(loaded.encode_indices(x)),
                          run.averaged.decode_indices(base.encode_indices(x)), atol=1e-6)
    assert gan_decoder_stale_reason(tmp_path / "run", vqvae_fingerprint(base)) is None
    assert gan_decoder_stale_reason(tmp_path / "run", vqvae_fingerprint(tiny_vqvae(seed=1))) == \
        "it was fine-tuned from another VQ-VAE"
    assert gan_decoder_stale_reason(tmp_path / "nothing", "abc") == "no fine-tuned decoder yet"
    (tmp_path / "run" / "model" / BASE_FILE).write_text("{not json")
    assert "unreadable" in gan_decoder_stale_reason(tmp_path / "run", vqvae_fingerprint(base))


def test_validation_rows_are_the_averaged_models_reconstruction_metrics(tmp_path):
    run = train(tmp_path)
    expected = metrics.reconstruction_metrics(run.averaged, square_images(4, 1), 16)
    assert run.validation[-1] == {"step": 6, **expected}


def test_ensure_gan_decoder_fine_tunes_once_and_never_replaces_it_for_a_new_vqvae(tmp_path, monkeypatch, capsys):
    import facegen.gan_decoder as gan_decoder
    import facegen.pipeline as pipeline
    from facegen.errors import ArtifactError

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path))
    bases = {"current": tiny_vqvae()}
    perceptual = object()
    monkeypatch.setattr(pipeline, "ensure_vqvae", lambda profile, progress=True, device=None: bases["current"])
    monkeypatch.setattr(pipeline, "perceptual_classifier", lambda profile, progress=True: perceptual)
    calls = []

    def fake_train(profile, vqvae, classifier, progress=True):  # the loop is tested above; here: what ensure does
        assert classifier is perceptual
        calls.append(vqvae_fingerprint(vqvae))
        run = GANDecoderRun(model=vqvae, averaged=vqvae, discriminator=None, folder=gan_decoder_folder(profile),
                            base_fingerprint=vqvae_fingerprint(vqvae))
        save_trained(run, recipe=training_recipe(profile.gan_decoder))
        return run

    monkeypatch.setattr(gan_decoder, "train_gan_decoder", fake_train)
    first = vqvae_fingerprint(bases["current"])
    pipeline.ensure_gan_decoder(TINY, progress=False)
    assert calls == [first] and "fine-tuning the 'ci' VQ-VAE decoder" in capsys.readouterr().out
    pipeline.ensure_gan_decoder(TINY, progress=False)
    assert calls == [first] and capsys.readouterr().out == ""  # present and current: loaded
    with pytest.raises(ArtifactError, match=rf"GAN-tuned decoder .* no longer has \(trained -> now: lr "
                                            rf"{TINY.gan_decoder.lr!r} -> 5e-05\).*`facegen train-gan-decoder "
                                            r"--restart --profile ci`"):
        pipeline.ensure_gan_decoder(TINY.replace(gan_decoder={"lr": 5e-5}), progress=False)
    bases["current"] = tiny_vqvae(seed=1)
    with pytest.raises(ArtifactError, match=rf"fine-tuned from VQ-VAE {first[:12]}, not from the current VQ-VAE "
                                            rf"{vqvae_fingerprint(bases['current'])[:12]}.*--restart"):
        pipeline.ensure_gan_decoder(TINY, progress=False)
    assert calls == [first]  # the fine-tuned decoder was not replaced


def test_cli_train_gan_decoder_reports_the_run(tmp_path, monkeypatch, capsys):
    import facegen.gan_decoder as gan_decoder
    from facegen.cli import main

    import facegen.pipeline as pipeline

    seen, base, perceptual = {}, tiny_vqvae(), object()
    monkeypatch.setattr(pipeline, "ensure_vqvae", lambda profile: base)  # the prerequisites the CLI hands over
    monkeypatch.setattr(pipeline, "perceptual_classifier", lambda profile: perceptual)

    def fake_train(profile, vqvae, classifier, steps=None, resume=True):
        seen.update(profile=profile.name, steps=steps, resume=resume, vqvae=vqvae, classifier=classifier)
        return GANDecoderRun(model=None, averaged=None, discriminator=None, folder=tmp_path, base_fingerprint="f",
                             perceptual="P", history=[{}] * 3, seconds=90,
                             validation=[{"psnr": 26.5, "ssim": 0.75, "sharpness": 0.9}])

    monkeypatch.setattr(gan_decoder, "train_gan_decoder", fake_train)
    assert main(["train-gan-decoder", "--profile", "ci", "--steps", "3", "--restart"]) == 0
    assert seen == {"profile": "ci", "steps": 3, "resume": False, "vqvae": base, "classifier": perceptual}
    out = capsys.readouterr().out
    assert "3 steps, 1.5 min; validation PSNR 26.50 dB, SSIM 0.750, sharpness 0.90; perceptual loss: P" in out


def test_the_decoder_step_under_bf16_autocast_gives_fp32_losses_and_keeps_the_tokens():
    from facegen.gan_decoder import decoder_terms
    from facegen.vqgan_losses import NLayerDiscriminator, make_perceptual_loss

    model = tiny_vqvae()
    freeze_tokens(model)
    model.decoder.train()
    codebook = model.quantizer.codebook.clone()
    disc = NLayerDiscriminator(ndf=8, n_layers=2)
    x = from_uint8(square_images(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = decoder_terms(model, model.decoder, disc, make_perceptual_loss(tiny_classifier()), x, True,
                              decoder_last_layer(model), TINY.gan_decoder)
    assert all(terms[k].dtype == torch.float32 and torch.isfinite(terms[k]) for k in ("loss", "l1", "g_loss"))
    terms["loss"].backward()
    assert torch.equal(model.quantizer.codebook, codebook)


def test_spectral_norm_and_r1_regularise_the_discriminator_once_the_gan_is_on(tmp_path):
    regularised = TINY.replace(gan_decoder={"disc_norm": "spectral", "r1_gamma": 2.0})
    run = train(tmp_path, "regularised", profile=regularised)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in run.discriminator.modules())
    assert any(hasattr(m, "parametrizations") for m in run.discriminator.modules())
    r1 = [row.get("r1") for row in run.history]
    assert r1[:3] == [None] * 3 and all(value > 0 for value in r1[3:])  # only from disc_start, always positive
    plain = train(tmp_path, "plain")
    assert all("r1" not in row for row in plain.history)
    assert not states_equal(run.averaged.decoder, plain.averaged.decoder)  # the regularisers change the training


def test_a_colour_blurred_discriminator_is_used_when_asked_and_changes_the_training(tmp_path):
    from facegen.vqgan_losses import ColourBlurredInput

    blurred = train(tmp_path, "colour", profile=TINY.replace(gan_decoder={"disc_colour_block": 4}))
    assert isinstance(blurred.discriminator, ColourBlurredInput) and blurred.discriminator.block == 4
    plain = train(tmp_path, "plain")
    assert not isinstance(plain.discriminator, ColourBlurredInput)
    assert not states_equal(blurred.averaged.decoder, plain.averaged.decoder)
