import json

import pytest
import torch
import torch.nn.functional as F

from facegen import metrics, pipeline
from facegen.data import images as images_module
from facegen.attributes import CONDITIONING_ATTRIBUTES, attribute_index
from facegen.classifier import (AttributeClassifier, balanced_accuracy, evaluate_classifier, load_classifier,
                                positive_weights, random_shift, targets_from_celeba, train_classifier)
from facegen.config import get_profile
from facegen.data.transforms import from_uint8

TINY = get_profile("ci").replace(classifier={"width": 8, "steps": 6, "batch_size": 8, "lr": 5e-3})
BALD = attribute_index("Bald")  # attribute 0 of CONDITIONING_ATTRIBUTES




def bright_top_task(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 uint8 noise images whose top half is bright iff Bald; the other attributes are random -1/1."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 120, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    attributes = torch.where(torch.rand(n, 40, generator=g) < 0.5, 1, -1).to(torch.int8)
    bald = attributes[:, BALD] == 1
    images[bald, :, :16] += 120
    return images, attributes


def test_targets_from_celeba_picks_the_conditioning_columns():
    rows = -torch.ones(2, 40, dtype=torch.int8)
    rows[0, attribute_index("Young")] = 1
    rows[1, attribute_index("Bald")] = 1
    rows[1, attribute_index("Attractive")] = 1  # not a conditioning attribute: ignored
    targets = targets_from_celeba(rows)
    assert targets.shape == (2, 18)
    assert targets[0].tolist() == [0] * 17 + [1]  # Young is the last conditioning attribute
    assert targets[1].tolist() == [1] + [0] * 17
    with pytest.raises(ValueError, match=r"shape \(N, 40\)"):
        targets_from_celeba(rows[:, :18])
    with pytest.raises(ValueError, match="only -1 and 1"):
        targets_from_celeba(torch.zeros(1, 40, dtype=torch.int8))


def test_feature_maps_shapes_and_features_are_their_pooled_last_stage():
    torch.manual_seed(0)
    model = AttributeClassifier(width=8).eval()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    maps = model.feature_maps(images)
    assert [tuple(m.shape) for m in maps] == [(2, 4, 32, 32), (2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4),
                                              (2, 64, 2, 2)]
    features = model.features(images)
    assert model.n_features == 64
    torch.testing.assert_close(features, maps[-1].mean(dim=(2, 3)))
    torch.testing.assert_close(model(images), model.head(features))
    assert model(images).shape == (2, len(CONDITIONING_ATTRIBUTES))


def test_classifier_rejects_bad_input():
    model = AttributeClassifier(width=8)
    with pytest.raises(TypeError, match="from_uint8"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="width must be an even integer"):
        AttributeClassifier(width=7)
    with pytest.raises(ValueError, match="distinct CelebA names"):
        AttributeClassifier(width=8, attributes=("Bald", "Happy"))


def test_random_shift_translates_each_image_within_the_limit():
    images = torch.zeros(6, 1, 9, 9)
    images[:, :, 4, 4] = 1.0  # one bright pixel in the middle
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    positions = [divmod(int(image.argmax()), 9) for image in shifted]
    assert all(2 <= y <= 6 and 2 <= x <= 6 for y, x in positions)
    assert len(set(positions)) > 1  # each image gets its own offset
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), torch.ones(6))  # a translation: the pixel moves, nothing else
    again = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again, shifted)  # a pure function of the generator's seed
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


def test_positive_weights_by_hand():
    targets = torch.tensor([[1, 0], [0, 0], [0, 0], [0, 1], [0, 0]], dtype=torch.float32)  # rates 1/5 and 1/5
    torch.testing.assert_close(positive_weights(targets, power=1.0), torch.tensor([4.0, 4.0]))
    torch.testing.assert_close(positive_weights(targets), torch.tensor([2.0, 2.0]))  # default power 0.5
    never = torch.zeros(4, 1)  # no positive at all: no division by zero
    torch.testing.assert_close(positive_weights(never, power=1.0), torch.tensor([4.0]))


def test_balanced_accuracy_by_hand():
    predicted = torch.tensor([[0, 1], [0, 1], [0, 0], [1, 1]]).bool()
    targets = torch.tensor([[0, 1], [0, 1], [0, 1], [1, 1]])
    # column 0: positives 1/1 right, negatives 3/3 right -> 1.0; column 1: positives 3/4, no negatives -> NaN
    result = balanced_accuracy(predicted, targets)
    assert result[0].item() == pytest.approx(1.0) and torch.isnan(result[1])
    always_no = balanced_accuracy(torch.zeros(4, 1, dtype=torch.bool), torch.tensor([[1], [0], [0], [0]]))
    assert always_no.item() == pytest.approx(0.5)  # 75% accurate, but no better than chance


def test_evaluate_classifier_matches_a_direct_computation():
    torch.manual_seed(0)
    model = AttributeClassifier(width=8).eval()
    images, attributes = bright_top_task(10)
    result = evaluate_classifier(model, images, attributes, batch_size=4)
    with torch.no_grad():
        logits = model((images.float() / 127.5 - 1).contiguous(memory_format=torch.channels_last))
    targets = targets_from_celeba(attributes)
    correct = ((logits > 0).long() == targets).float().mean(dim=0)
    assert result["accuracy"] == pytest.approx(dict(zip(CONDITIONING_ATTRIBUTES, correct.tolist())))
    assert result["mean_accuracy"] == pytest.approx(correct.mean().item())
    assert result["loss"] == pytest.approx(F.binary_cross_entropy_with_logits(logits, targets.float()).item(),
                                           rel=1e-5)
    rate = targets[:, 0].float().mean().item()
    assert result["majority_baseline"]["Bald"] == pytest.approx(max(rate, 1 - rate))
    predicted, positive = logits[:, 0] > 0, targets[:, 0] == 1
    by_hand = ((predicted[positive]).float().mean() + (~predicted[~positive]).float().mean()).item() / 2
    assert result["balanced_accuracy"]["Bald"] == pytest.approx(by_hand)


def test_training_learns_a_simple_attribute(tmp_path):
    profile = TINY.replace(classifier={"steps": 60, "batch_size": 16})
    run = train_classifier(profile, bright_top_task(160), bright_top_task(64, seed=1), folder=tmp_path,
                           progress=False)
    assert run.metrics["accuracy"]["Bald"] >= 0.95
    assert run.metrics["accuracy"]["Smiling"] < 0.8  # random labels stay unlearnable: no leak from train to valid
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["accuracy"]["Bald"] == run.metrics["accuracy"]["Bald"] and saved["step"] == 60
    first = sum(h["loss"] for h in run.history[:5]) / 5
    last = sum(h["loss"] for h in run.history[-5:]) / 5
    assert last < first


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    train, valid = bright_top_task(24), bright_top_task(8, seed=1)
    whole = train_classifier(TINY, train, valid, folder=tmp_path / "whole", progress=False)
    first = train_classifier(TINY, train, valid, folder=tmp_path / "split", stop_after=3, progress=False)
    assert len(first.history) == 3 and not (tmp_path / "split" / "model.safetensors").exists()
    resumed = train_classifier(TINY, train, valid, folder=tmp_path / "split", progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.metrics == whole.metrics
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    loaded = load_classifier(tmp_path / "split")
    assert not loaded.training and loaded.attributes == CONDITIONING_ATTRIBUTES
    for key, value in whole.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_train_classifier_rejects_mismatched_data(tmp_path):
    images, attributes = bright_top_task(8)
    with pytest.raises(ValueError, match="train has 8 images but 7 attribute rows"):
        train_classifier(TINY, (images, attributes[:7]), (images, attributes), folder=tmp_path, progress=False)
    with pytest.raises(ValueError, match="valid images must be uint8"):
        train_classifier(TINY, (images, attributes), (images.float(), attributes), folder=tmp_path, progress=False)


def test_load_classifier_names_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected config.json and model.safetensors"):
        load_classifier(tmp_path)
    AttributeClassifier(width=8).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["width"] == 8
    (tmp_path / "config.json").write_text(json.dumps({**config, "width": 16}))
    with pytest.raises(ValueError, match="(?s)model.safetensors does not match .*config.json.*size mismatch"):
        load_classifier(tmp_path)
    (tmp_path / "config.json").write_text('{"hidden": 3}')
    with pytest.raises(ValueError, match="config.json is not an attribute classifier config"):
        load_classifier(tmp_path)


def test_ensure_classifier_trains_once_then_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path))
    data = {"train": bright_top_task(16), "valid": bright_top_task(8, seed=1)}
    monkeypatch.setattr(images_module, "load_images", lambda profile, split, attributes, progress: data[split])
    model = pipeline.ensure_classifier(TINY, progress=False)
    assert "training the 'ci' attribute classifier" in capsys.readouterr().out
    assert model.width == TINY.classifier.width and not model.training
    assert (tmp_path / "ci" / "classifier" / "metrics.json").is_file()
    again = pipeline.ensure_classifier(TINY, progress=False)
    assert capsys.readouterr().out == ""  # nothing to build the second time
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    images = bright_top_task(4)[0]
    torch.testing.assert_close(metrics.classifier_outputs(again, images), metrics.classifier_outputs(model, images))
    from facegen.errors import ArtifactError

    wider = TINY.replace(classifier={"width": TINY.classifier.width * 2})  # the profile changed since: refused
    with pytest.raises(ArtifactError, match=rf"the attribute classifier in {tmp_path / 'ci' / 'classifier'} was "
                                            rf"trained with settings the 'ci' profile no longer has \(trained -> now: "
                                            rf"width {TINY.classifier.width} -> {2 * TINY.classifier.width}\)"):
        pipeline.ensure_classifier(wider, progress=False)
    assert capsys.readouterr().out == ""  # and not retrained


def test_ensure_judge_classifier_is_another_seed_in_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path))
    data = {"train": bright_top_task(16), "valid": bright_top_task(8, seed=1)}
    monkeypatch.setattr(images_module, "load_images", lambda profile, split, attributes, progress: data[split])
    first = pipeline.ensure_classifier(TINY, progress=False)
    judge = pipeline.ensure_judge_classifier(TINY, progress=False)
    assert "training the 'ci' judge classifier" in capsys.readouterr().out
    assert (tmp_path / "ci" / "classifier_judge" / "model.safetensors").is_file()
    assert not torch.equal(judge.head.weight, first.head.weight)  # another seed: other weights
    seeded = train_classifier(TINY.replace(classifier={"seed": TINY.classifier.seed + 1}), train=data["train"],
                              valid=data["valid"], folder=tmp_path / "by_hand", progress=False).model
    for key, value in seeded.state_dict().items():  # exactly the profile's recipe with seed + 1
        assert torch.equal(judge.state_dict()[key], value), key
    again = pipeline.ensure_judge_classifier(TINY, progress=False)
    assert capsys.readouterr().out == "" and torch.equal(again.head.weight, judge.head.weight)
    from facegen.errors import ArtifactError

    reseeded = TINY.replace(classifier={"seed": 5})  # the judge's recipe follows the profile's seed: now 6
    with pytest.raises(ArtifactError, match=rf"judge classifier .* \(trained -> now: seed {TINY.classifier.seed + 1} "
                                            r"-> 6\)"):
        pipeline.ensure_judge_classifier(reseeded, progress=False)


def test_the_loss_is_fp32_under_bf16_autocast():
    from facegen.classifier import classifier_loss

    torch.manual_seed(0)
    model = AttributeClassifier(width=8).train()
    images, attributes = bright_top_task(4)
    targets = torch.zeros(4, len(CONDITIONING_ATTRIBUTES))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = classifier_loss(model, from_uint8(images), targets, torch.ones(len(CONDITIONING_ATTRIBUTES)))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
