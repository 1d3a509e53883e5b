"""Notebook 07's exercise checks accept the right answer, reject typical wrong ones with a hint, and say "not attempted"
for None (facegen.exercises.notebook07)."""

import math

import pytest
import torch

from facegen import exercises
from facegen.config import get_profile
from facegen.exercises import notebook07
from facegen.vqgan_losses import NLayerDiscriminator


def assert_not_yet(verdict, hint: str):
    assert verdict.status == exercises.NOT_YET and hint in verdict.message, verdict


def test_checks_say_not_attempted_for_none():
    profile = get_profile("ci")
    for verdict in (notebook07.bits_per_image(None, side=256, f=8, K=8192),
                    notebook07.deeper_patchgan((None, None), NLayerDiscriminator(ndf=2, n_layers=4), image_side=128),
                    notebook07.adaptive_gan_weight(None, 0.3, 0.05, 0.8),
                    notebook07.last_quarter_disc_start(None, profile)):
        assert verdict.status == exercises.NOT_ATTEMPTED and str(verdict).startswith("not attempted yet — ")


def test_bits_per_image():
    assert notebook07.bits_per_image((1024, 13312), side=256, f=8, K=8192)
    assert notebook07.bits_per_image((256, 256 * math.log2(16384)), side=256, f=16, K=16384)
    assert_not_yet(notebook07.bits_per_image((32, 416), side=256, f=8, K=8192), "along one side")
    assert_not_yet(notebook07.bits_per_image((256, 3328), side=256, f=8, K=8192), "(side / f)")
    assert_not_yet(notebook07.bits_per_image((1024, 1024 * 8192), side=256, f=8, K=8192), "log2 K bits, not K")
    assert_not_yet(notebook07.bits_per_image((1024, 1024 * math.log(8192)), side=256, f=8, K=8192), "nats")
    assert_not_yet(notebook07.bits_per_image((1024, 1024 * 14), side=256, f=8, K=8192), "tokens x bits per token")
    assert_not_yet(notebook07.bits_per_image(13312, side=256, f=8, K=8192), "2 values")


def test_deeper_patchgan():
    four = NLayerDiscriminator(ndf=2, n_layers=4)
    logits = four(torch.zeros(1, 3, 128, 128))
    assert logits.shape[-1] == 6  # the arithmetic the check does without running the network
    assert notebook07.deeper_patchgan((6, 142), four, image_side=128)
    assert notebook07.deeper_patchgan((6, 142), four, image_side=128).message.startswith("6x6 logits")
    assert_not_yet(notebook07.deeper_patchgan((14, 70), NLayerDiscriminator(ndf=2, n_layers=3), image_side=128),
                   "has 3 stride-2 layers")
    assert_not_yet(notebook07.deeper_patchgan((8, 142), four, image_side=128), "stride 1")
    assert_not_yet(notebook07.deeper_patchgan((7, 142), four, image_side=128), "logits_4.shape")
    assert_not_yet(notebook07.deeper_patchgan((6, 70), four, image_side=128), "one more")
    assert_not_yet(notebook07.deeper_patchgan((6, 140), four, image_side=128), "2r + 2")
    assert_not_yet(notebook07.deeper_patchgan((6, 128), four, image_side=128), "walk back")
    # the expected numbers follow the network and the image: 64 px faces through 3 layers
    three = NLayerDiscriminator(ndf=2, n_layers=3)
    assert notebook07.deeper_patchgan((three(torch.zeros(1, 3, 64, 64)).shape[-1], 70), three, image_side=64,
                                      n_layers=3)


def test_adaptive_gan_weight():
    right = 0.3 / (0.05 + 1e-4) * 0.8
    assert notebook07.adaptive_gan_weight(right, 0.3, 0.05, 0.8)
    assert notebook07.adaptive_gan_weight(round(right, 3), 0.3, 0.05, 0.8)
    assert notebook07.adaptive_gan_weight(torch.tensor(right), 0.3, 0.05, 0.8)
    assert_not_yet(notebook07.adaptive_gan_weight(0.05 / 0.3 * 0.8, 0.3, 0.05, 0.8), "upside down")
    assert_not_yet(notebook07.adaptive_gan_weight(0.3 / 0.05, 0.3, 0.05, 0.8), "what multiplies it")
    assert_not_yet(notebook07.adaptive_gan_weight(0.3 / 0.05 * 0.8, 0.3, 0.05, 0.8), "denominator")
    assert_not_yet(notebook07.adaptive_gan_weight(1.0, 0.3, 0.05, 0.8), "disc_weight")
    assert notebook07.adaptive_gan_weight(2.0 / (0.5 + 1e-4), 2.0, 0.5, 1.0)  # other norms: computed, not stored


@pytest.mark.parametrize("name", ["ci", "cpu"])
def test_last_quarter_disc_start(name):
    profile = get_profile(name)
    steps = profile.vqgan.steps
    assert notebook07.last_quarter_disc_start(profile.replace(vqgan={"disc_start": steps - steps // 4}), profile)
    assert notebook07.last_quarter_disc_start(profile.replace(vqgan={"disc_start": 3 * steps // 4}), profile)
    assert_not_yet(notebook07.last_quarter_disc_start(profile, profile), "default")
    assert_not_yet(notebook07.last_quarter_disc_start(profile.replace(vqgan={"disc_start": steps // 4}), profile),
                   "three quarters")
    assert_not_yet(notebook07.last_quarter_disc_start(
        profile.replace(gan_decoder={"disc_start": steps - steps // 4}), profile), "gan_decoder")
    assert_not_yet(notebook07.last_quarter_disc_start(
        profile.replace(vqgan={"disc_start": steps - steps // 4, "steps": steps // 2}), profile), "run's length")
    assert_not_yet(notebook07.last_quarter_disc_start(
        profile.replace(vqgan={"disc_start": steps - steps // 4, "lr": 1.0}), profile), "change only")
    assert_not_yet(notebook07.last_quarter_disc_start(profile.replace(vqgan={"disc_start": steps - 2}), profile),
                   "a quarter of them")
    assert_not_yet(notebook07.last_quarter_disc_start(steps - steps // 4, profile), "should be a profile")
