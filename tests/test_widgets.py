"""facegen.widgets: the explorer's controls -> sampler arguments, busy state, image updates, completion mode.

The sampler is injected: a fake records what it was called with and returns images that depend on those arguments.
"""

import io

import pytest
import torch
from PIL import Image

from facegen import widgets
from facegen.attributes import CONDITIONING_ATTRIBUTES
from facegen.tokens import Vocabulary

VOCAB = Vocabulary(codebook_size=16, grid_size=4)  # 4x4 tokens: 32x32 images


class FakeVQVAE:
    """encode_indices: the token grid of an image is its top-left pixel's value, so the codes name the face."""

    def encode_indices(self, images):
        assert images.ndim == 4 and images.shape[1:] == (3, 32, 32)
        value = ((images[:, 0, 0, 0] + 1) * 7.5).round().long()  # [-1, 1] -> 0..15
        return value[:, None, None].expand(len(images), 4, 4).clone()


class FakeSampler:
    """Records each call; returns n images whose brightness depends on the seed and the attributes."""

    def __init__(self, fail: Exception | None = None):
        self.calls, self.fail, self.busy_seen = [], fail, []
        self.explorer = None

    def __call__(self, model, vocab, vqvae, **kwargs):
        self.calls.append(kwargs)
        if self.explorer is not None:  # what the user sees while the sampler runs
            e = self.explorer
            self.busy_seen.append((e.button.disabled, e.button.description, e.status.value))
        if self.fail:
            raise self.fail
        level = (kwargs["seed"] * 0.1 + 0.3 * len(kwargs["attributes"])) % 2 - 1
        return torch.full((kwargs["n"], 3, 32, 32), level)


def valid_faces(n: int = 5) -> torch.Tensor:
    """uint8 faces whose top-left pixel encodes the index (FakeVQVAE turns it into the codes)."""
    faces = torch.full((n, 3, 32, 32), 200, dtype=torch.uint8)
    for i in range(n):
        faces[i, :, 0, 0] = round((i + 1) * 255 / 15)
    return faces


def make_explorer(sampler=None, **kwargs) -> widgets.Explorer:
    sampler = sampler or FakeSampler()
    explorer = widgets.Explorer(object(), VOCAB, FakeVQVAE(), valid_images=valid_faces(), sample_fn=sampler,
                                **kwargs)
    sampler.explorer = explorer
    return explorer


def decode_png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# --- pure functions ------------------------------------------------------------------------------------------------


def test_toggles_to_attributes_leave_out_the_unspecified():
    values = {"Smiling": 1, "Eyeglasses": 0, "Bald": "?", "Young": "?"}
    assert widgets.attributes_from_toggles(values) == {"Smiling": 1, "Eyeglasses": 0}
    assert widgets.attributes_from_toggles({name: "?" for name in CONDITIONING_ATTRIBUTES}) == {}


def test_toggles_refuse_other_values_naming_the_attribute():
    with pytest.raises(ValueError, match="'Smiling'.*2"):
        widgets.attributes_from_toggles({"Smiling": 2})
    with pytest.raises(ValueError, match="Bald"):
        widgets.attributes_from_toggles({"Bald": True})


def test_settings_from_controls_map_top_k_zero_to_off():
    kwargs = widgets.settings_from_controls(batch_size=8, guidance_scale=2.5, temperature=0.7, top_k=0, seed=3)
    assert kwargs == {"n": 8, "guidance_scale": 2.5, "temperature": 0.7, "top_k": None, "seed": 3}
    kwargs = widgets.settings_from_controls(batch_size=1, guidance_scale=0, temperature=0, top_k=40, seed=0)
    assert (kwargs["top_k"], kwargs["temperature"]) == (40, 0.0)  # temperature 0: greedy


@pytest.mark.parametrize("bad, match", [({"temperature": -0.5}, "temperature"), ({"top_k": -1}, "top_k"),
                                        ({"batch_size": 0}, "batch_size")])
def test_settings_from_controls_name_a_bad_value(bad, match):
    values = dict(batch_size=4, guidance_scale=1.0, temperature=1.0, top_k=0, seed=0) | bad
    with pytest.raises(ValueError, match=match):
        widgets.settings_from_controls(**values)


def test_completion_settings_repeat_the_prefix_and_count_kept_tokens():
    codes = torch.arange(16).reshape(4, 4)
    settings = widgets.completion_settings(codes, keep_rows=3, n=2)
    assert settings["keep_tokens"] == 12
    assert settings["prefix_codes"].shape == (2, 4, 4)
    assert torch.equal(settings["prefix_codes"][1], codes)
    with pytest.raises(ValueError, match="keep_rows"):
        widgets.completion_settings(codes, keep_rows=5, n=1)


def test_keep_rows_preview_greys_exactly_the_rows_not_kept():
    image = torch.ones(3, 32, 32)
    shown = widgets.keep_rows_preview(image, keep_rows=1, grid_size=4)  # one token row = 8 pixel rows
    assert torch.equal(shown[:, :8], image[:, :8])
    assert torch.equal(shown[:, 8:], torch.zeros(3, 24, 32))
    assert torch.equal(image, torch.ones(3, 32, 32))  # the input is left alone


def test_png_bytes_round_trip_the_grid():
    images = torch.stack([torch.full((3, 8, 8), -1.0), torch.full((3, 8, 8), 1.0)])
    grid = decode_png(widgets.png_bytes(images, nrow=2))
    assert grid.size == (2 + 8 + 2 + 8 + 2, 2 + 8 + 2)  # torchvision's make_grid with padding 2
    assert grid.getpixel((2, 2)) == (0, 0, 0) and grid.getpixel((12, 2)) == (255, 255, 255)


# --- the Explorer ------------------------------------------------------------------------------------------------


def test_explorer_has_a_three_way_toggle_per_conditioning_attribute():
    explorer = make_explorer()
    assert list(explorer.toggles) == list(VOCAB.attributes)
    assert all(t.options == (("?", "?"), ("no", 0), ("yes", 1)) and t.value == "?" for t in explorer.toggles.values())


def test_generate_passes_the_controls_to_the_sampler():
    sampler = FakeSampler()
    explorer = make_explorer(sampler)
    explorer.toggles["Smiling"].value = 1
    explorer.toggles["Eyeglasses"].value = 0
    explorer.guidance.value, explorer.temperature.value = 3.0, 0.5
    explorer.top_k.value, explorer.seed.value, explorer.batch_size.value = 5, 42, 4
    images = explorer.generate()
    assert sampler.calls == [{"n": 4, "guidance_scale": 3.0, "temperature": 0.5, "top_k": 5, "seed": 42,
                              "attributes": {"Smiling": 1, "Eyeglasses": 0}}]
    assert images.shape == (4, 3, 32, 32) and explorer.last_images is images


def test_generate_shows_busy_while_sampling_and_restores_after():
    sampler = FakeSampler()
    explorer = make_explorer(sampler)
    explorer.generate()
    assert sampler.busy_seen == [(True, "Generating...", "Generating...")]
    assert not explorer.button.disabled and explorer.button.description == "Generate"
    assert explorer.status.value.startswith("8 faces in")


def test_an_error_is_shown_in_the_status_and_the_button_comes_back():
    sampler = FakeSampler(fail=RuntimeError("out of memory"))
    explorer = make_explorer(sampler)
    assert explorer.generate() is None
    assert sampler.busy_seen[0][:2] == (True, "Generating...")
    assert not explorer.button.disabled and explorer.button.description == "Generate"
    assert explorer.status.value == "Error: RuntimeError: out of memory"


def test_the_button_generates_and_new_settings_change_the_image():
    sampler = FakeSampler()
    explorer = make_explorer(sampler)
    placeholder = explorer.faces.value
    explorer.button.click()
    first = explorer.faces.value
    assert len(sampler.calls) == 1 and first != placeholder
    assert decode_png(first).size == (2 + 8 * 34, 2 + 34)  # 8 faces of 32 px in one row
    explorer.toggles["Bald"].value = 1
    explorer.button.click()
    assert explorer.faces.value != first


def test_completion_passes_the_chosen_face_codes_and_rows():
    sampler = FakeSampler()
    explorer = make_explorer(sampler)
    explorer.complete.value = True
    explorer.face_index.value, explorer.keep_rows.value, explorer.batch_size.value = 2, 3, 4
    explorer.generate()
    call = sampler.calls[0]
    assert call["keep_tokens"] == 3 * 4
    assert torch.equal(call["prefix_codes"], torch.full((4, 4, 4), 3))  # face 2's codes (FakeVQVAE: index + 1)
    explorer.complete.value = False
    explorer.generate()
    assert "prefix_codes" not in sampler.calls[1] and "keep_tokens" not in sampler.calls[1]


def test_the_preview_shows_only_the_kept_rows_in_completion_mode():
    explorer = make_explorer()
    explorer.keep_rows.value = 1
    assert decode_png(explorer.preview.value).getpixel((16, 20)) == (200, 200, 200)  # not completing: whole face
    explorer.complete.value = True
    preview = decode_png(explorer.preview.value)  # one image: no padding around it
    assert preview.getpixel((16, 7)) == (200, 200, 200)  # token row 0 (pixel rows 0-7) is kept
    assert preview.getpixel((16, 8)) == (128, 128, 128)  # below it: mid-grey (0 in [-1, 1])
    explorer.face_index.value = 1
    assert decode_png(explorer.preview.value).getpixel((0, 0)) == (34, 34, 34)  # face 1's top-left pixel


def test_without_validation_faces_there_is_no_completion_mode():
    sampler = FakeSampler()
    explorer = widgets.Explorer(object(), VOCAB, FakeVQVAE(), sample_fn=sampler)
    explorer.complete.value = True  # not shown, and ignored
    explorer.generate()
    assert "prefix_codes" not in sampler.calls[0]


def test_explorer_refuses_bad_arguments_by_name():
    with pytest.raises(ValueError, match="valid_images"):
        widgets.Explorer(object(), VOCAB, FakeVQVAE(), valid_images=torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="batch_size"):
        widgets.Explorer(object(), VOCAB, FakeVQVAE(), batch_size=3)


def test_the_plain_text_repr_is_stable_for_nbval():
    bundle = make_explorer()._repr_mimebundle_()
    assert bundle["text/plain"] == "Explorer(18 attribute toggles; needs a live kernel to generate)"
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_explorer_for_profile_loads_the_profile_artifacts_and_draws_a_first_batch(monkeypatch):
    from types import SimpleNamespace

    from facegen import pipeline

    asked = []
    model, vqvae, faces = object(), FakeVQVAE(), valid_faces(3)
    monkeypatch.setattr(pipeline, "ensure_gpt", lambda profile, progress: asked.append(("gpt", profile.name))
                        or SimpleNamespace(model=model, vocab=VOCAB))
    monkeypatch.setattr(pipeline, "ensure_vqvae", lambda profile, progress: asked.append(("vqvae", profile.name))
                        or vqvae)
    monkeypatch.setattr(pipeline, "load_images", lambda profile, split, progress: asked.append((split, profile.name))
                        or faces)
    ranker = object()
    monkeypatch.setattr(pipeline, "ensure_classifier", lambda profile, progress: asked.append(("classifier",
                                                                                             profile.name)) or ranker)
    sampler = FakeSampler()
    monkeypatch.setattr(widgets, "_default_sampler", sampler)
    explorer = widgets.explorer_for_profile("ci")
    assert asked == [("gpt", "ci"), ("vqvae", "ci"), ("valid", "ci"), ("classifier", "ci")]
    assert explorer.model is model and explorer.vqvae is vqvae and explorer.valid_images is faces
    assert explorer.ranker is ranker and explorer.best_of.value == 1  # best of k offered, off until asked
    assert len(sampler.calls) == 1 and explorer.last_images is not None  # opens with faces
    assert sampler.calls[0]["guidance_scale"] == widgets.DEFAULT_GUIDANCE == 3.0  # guided by default
    assert widgets.explorer_for_profile("ci", generate=False).last_images is None


# --- with the real sampler ------------------------------------------------------------------------------------------


def test_explorer_with_a_tiny_gpt_keeps_the_chosen_rows_when_completing():
    from facegen.config import get_profile
    from facegen.gpt import build_gpt
    from facegen.sampling import sample_codes
    from facegen.vqvae import VQVAE

    torch.manual_seed(0)
    model = build_gpt(get_profile("ci").replace(gpt={"n_layer": 1, "n_embd": 16, "n_head": 2}), VOCAB).eval()
    vqvae = VQVAE(codebook_size=16, embed_dim=4, hidden=8, n_res_blocks=1).eval()
    sampled = []

    def sampler(model, vocab, vqvae, **kwargs):  # sample_faces, keeping the codes to look at
        sampled.append(sample_codes(model, vocab, **kwargs))
        return vqvae.decode_indices(sampled[-1])

    faces = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    explorer = widgets.Explorer(model, VOCAB, vqvae, valid_images=faces, sample_fn=sampler)
    explorer.batch_size.value, explorer.guidance.value = 4, 2.0
    explorer.complete.value, explorer.face_index.value, explorer.keep_rows.value = True, 1, 2
    images = explorer.generate()
    assert explorer.status.value.startswith("4 faces in"), explorer.status.value
    assert images.shape == (4, 3, 32, 32)
    face_codes = vqvae.encode_indices(faces[1:2].float() / 127.5 - 1)[0]
    assert torch.equal(sampled[0][:, :2], face_codes[:2].expand(4, 2, 4))  # the first 2 rows are the face's
    assert not torch.equal(sampled[0][:, 2:], face_codes[2:].expand(4, 2, 4))  # the rest is written anew


# --- best of k ------------------------------------------------------------------------------------------------------


def test_best_of_k_draws_k_rounds_with_the_explorers_sampler_and_shows_the_rankers_choice():
    from test_rerank import BrightnessRanker

    sampler = FakeSampler()
    explorer = make_explorer(sampler, ranker=BrightnessRanker(attributes=VOCAB.attributes))
    explorer.batch_size.value, explorer.seed.value, explorer.best_of.value = 4, 5, 3
    explorer.toggles["Smiling"].value = 1
    images = explorer.generate()
    assert [c["seed"] for c in sampler.calls] == [5, 6, 7]  # round c with seed + c, all else the controls'
    assert all(c["n"] == 4 and c["attributes"] == [{"Smiling": 1}] * 4 for c in sampler.calls)
    assert all(c["guidance_scale"] == widgets.DEFAULT_GUIDANCE for c in sampler.calls)
    # FakeSampler's level, (0.1 seed + 0.3 x 4 requests) % 2 - 1, is 0.7, 0.8, 0.9 for seeds 5, 6, 7: asked
    # present, the brightest (seed 7) wins; asked absent, the darkest would
    torch.testing.assert_close(images, torch.full((4, 3, 32, 32), 0.9))
    explorer.toggles["Smiling"].value = 0
    torch.testing.assert_close(explorer.generate(), torch.full((4, 3, 32, 32), 0.7))
    assert explorer.status.value.startswith("4 faces, each the best of 3 by the attribute classifier, in ")
    rounds_shown = [(True, "Generating...", f"Generating... round {r} of 3") for r in (1, 2, 3)]
    assert sampler.busy_seen == rounds_shown * 2  # two Generates, each saying which round runs
    assert explorer.best_of in explorer.widget.children[2].children  # shown beside the other sliders


def test_best_of_k_with_nothing_asked_draws_one_round_and_says_why():
    from test_rerank import BrightnessRanker

    sampler = FakeSampler()
    explorer = make_explorer(sampler, ranker=BrightnessRanker(attributes=VOCAB.attributes))
    explorer.best_of.value = 4
    explorer.generate()
    assert len(sampler.calls) == 1 and sampler.calls[0]["attributes"] == {}
    assert "best of 4 needs an attribute set to yes or no to rank by: one round drawn" in explorer.status.value


def test_without_a_ranker_there_is_no_best_of_and_the_slider_is_ignored():
    sampler = FakeSampler()
    explorer = make_explorer(sampler)
    explorer.best_of.value = 4  # not shown, and ignored
    explorer.toggles["Smiling"].value = 1
    explorer.generate()
    assert len(sampler.calls) == 1 and explorer.best_of not in explorer.widget.children[2].children


def test_best_of_k_in_the_explorer_equals_sample_best_of_with_a_tiny_gpt_while_completing():
    from facegen.classifier import AttributeClassifier
    from facegen.config import get_profile
    from facegen.gpt import build_gpt
    from facegen.rerank import sample_best_of
    from facegen.sampling import sample_faces
    from facegen.vqvae import VQVAE

    torch.manual_seed(0)
    model = build_gpt(get_profile("ci").replace(gpt={"n_layer": 1, "n_embd": 16, "n_head": 2}), VOCAB).eval()
    vqvae = VQVAE(codebook_size=16, embed_dim=4, hidden=8, n_res_blocks=1).eval()
    ranker = AttributeClassifier(attributes=VOCAB.attributes).eval()
    faces = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    explorer = widgets.Explorer(model, VOCAB, vqvae, valid_images=faces, ranker=ranker)
    explorer.batch_size.value, explorer.best_of.value, explorer.seed.value = 4, 3, 2
    explorer.toggles["Eyeglasses"].value = 0
    explorer.complete.value, explorer.keep_rows.value = True, 2
    images = explorer.generate()
    assert images is not None, explorer.status.value
    codes = vqvae.encode_indices(faces[:1].float() / 127.5 - 1)[0]
    expected = sample_best_of(model, VOCAB, vqvae, ranker, [{"Eyeglasses": 0}] * 4, candidates=3, seed=2,
                              guidance_scale=widgets.DEFAULT_GUIDANCE, temperature=1.0, top_k=None,
                              prefix_codes=codes.expand(4, 4, 4), keep_tokens=8)
    torch.testing.assert_close(images, expected.faces)
    plain = sample_faces(model, VOCAB, vqvae, 4, {"Eyeglasses": 0}, seed=2, guidance_scale=widgets.DEFAULT_GUIDANCE,
                         prefix_codes=codes.expand(4, 4, 4), keep_tokens=8)
    torch.testing.assert_close(expected.first, plain)  # round 0 is the plain Generate's batch
