"""The attribute classifier: a small CNN that judges generated faces.

It answers two questions about samples:
- did the GPT draw what was asked? `metrics.attribute_accuracy` compares its predictions with the request;
- do samples look like the data? `metrics.frechet_feature_distance` compares the statistics of its pooled features
  (the idea of FID, with a feature extractor trained on our own faces instead of Inception on ImageNet).
The VQGAN chapter also reuses its `feature_maps` as a perceptual loss.

Architecture: five stages, each a stride-2 3x3 convolution (+ BatchNorm + ReLU), the deeper three followed by a
stride-1 one: 128 px -> 4 px, channels width/2, width, 2w, 4w, 8w; then a global average pool (the `features`, 8w
numbers) and one linear layer to the logits of the 18 `CONDITIONING_ATTRIBUTES`.

Training is the VQ-VAE's loop in small: batches and augmentation are pure functions of (seed, step), checkpoints
hold every RNG state, so an interrupted run resumes exactly. The artifact `artifacts/<profile>/classifier/` holds
config.json + model.safetensors (PyTorchModelHubMixin's format) and metrics.json (validation accuracy per attribute).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from facegen import metrics
from facegen.attributes import CELEBA_ATTRIBUTES, CONDITIONING_ATTRIBUTES, attribute_index
from facegen.checkpoint import atomic_write_json, load_model_folder, write_recipe
from facegen.config import Profile, get_profile, training_recipe
from facegen.data.streaming import is_image_batch_source
from facegen.data.transforms import from_uint8
from facegen.train.engine import Engine, cpu_copy
from facegen.train.batches import step_batches
from facegen.train.schedule import cosine_with_warmup, step_generator, warmup_steps

METRICS = "metrics.json"
HISTORY = "history.json"
MAX_SHIFT = 4  # augmentation: random translations of up to this many pixels (no flips: see `random_shift`)
VALIDATIONS_PER_RUN = 4  # validate and checkpoint this many times per run (and checkpoint at `stop_after`)
WEIGHT_DECAY = 0.01
POSITIVE_WEIGHT_POWER = 0.5  # see `positive_weights`
STREAMED_VALID = 4096  # validation faces of a streamed split (CelebA's 19,867 would take ~1 GB decoded)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    # No conv bias: BatchNorm's shift replaces it.
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class AttributeClassifier(nn.Module, PyTorchModelHubMixin):
    """Images (B, 3, H, W) in [-1, 1] -> logits (B, len(attributes)); positive logit = attribute present."""

    def __init__(self, width: int = 32, attributes: tuple[str, ...] | list[str] = CONDITIONING_ATTRIBUTES):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 2 or width % 2:
            raise ValueError(f"AttributeClassifier: width must be an even integer >= 2, got {width!r}")
        unknown = [name for name in attributes if name not in CELEBA_ATTRIBUTES]
        if unknown or not attributes or len(set(attributes)) != len(attributes):
            raise ValueError(f"AttributeClassifier: attributes must be distinct CelebA names; got {list(attributes)}")
        self.width, self.attributes = width, tuple(attributes)
        channels = [width // 2, width, 2 * width, 4 * width, 8 * width]
        stages, previous = [], 3
        for i, out in enumerate(channels):
            layers = [_conv_bn_relu(previous, out, stride=2)]
            if i >= 2:  # not at 64 and 32 px, where a second conv would cost most (measured: ~20% slower training)
                layers.append(_conv_bn_relu(out, out, stride=1))
            stages.append(nn.Sequential(*layers))
            previous = out
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(previous, len(self.attributes))

    @classmethod
    def from_profile(cls, profile: Profile) -> "AttributeClassifier":
        return cls(width=profile.classifier.width)

    @property
    def n_features(self) -> int:
        return self.head.in_features

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage: (B, width/2, H/2, W/2), (B, width, H/4, W/4), ... (B, 8 width, H/32, W/32).

        As a perceptual loss or feature extractor, use the model in eval mode (BatchNorm then applies its running
        statistics, so one image's features do not depend on the rest of the batch)."""
        _check_images(images)
        maps, x = [], images
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, n_features): the last stage's maps averaged over positions, i.e. what the linear head reads."""
        return self.feature_maps(images)[-1].mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"AttributeClassifier: expected images of shape (B, 3, H, W) in [-1, 1], got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"AttributeClassifier: expected float images in [-1, 1], got {images.dtype} "
                        "(convert uint8 images with facegen.data.transforms.from_uint8)")


# ------------------------------------------------------------------------------------------------------- training

@dataclass
class ClassifierRun:
    model: AttributeClassifier
    folder: Path
    history: list[dict] = field(default_factory=list)  # one row per step: step, loss, lr
    validation: list[dict] = field(default_factory=list)  # one row per validation: step, loss, mean accuracy
    metrics: dict = field(default_factory=dict)  # the last validation in full (what metrics.json holds)
    seconds: float = 0.0
    images_per_second: float = 0.0


def classifier_folder(profile: Profile) -> Path:
    return profile.artifacts / "classifier"


def targets_from_celeba(attributes: torch.Tensor, names: tuple[str, ...] = CONDITIONING_ATTRIBUTES) -> torch.Tensor:
    """CelebA attribute rows (N, 40) of -1/1 -> (N, len(names)) of 0/1 (long), the columns of `names`."""
    if attributes.ndim != 2 or attributes.shape[1] != len(CELEBA_ATTRIBUTES):
        raise ValueError(f"expected CelebA attributes of shape (N, {len(CELEBA_ATTRIBUTES)}), "
                         f"got {tuple(attributes.shape)}")
    columns = attributes[:, [attribute_index(name) for name in names]]
    if not bool(((columns == 1) | (columns == -1)).all()):
        raise ValueError("CelebA attributes must hold only -1 and 1")
    return (columns == 1).long()


def positive_weights(targets: torch.Tensor, power: float = POSITIVE_WEIGHT_POWER) -> torch.Tensor:
    """BCE weight of each attribute's positives: (negatives / positives) ** power, from 0/1 targets (N, A).

    Rare attributes (2% bald) barely move an unweighted loss, and a short run then learns to answer "no" for them;
    power 1 would balance the classes fully, 0.5 meets halfway so that plain accuracy does not suffer."""
    positives = targets.sum(dim=0)
    negatives = len(targets) - positives
    return (negatives.clamp(min=1) / positives.clamp(min=1)) ** power  # clamps: an absent class must not divide


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random offset in [-max_shift, max_shift]^2, repeating the border pixels.

    No horizontal flips: SynthFaces look symmetric, but a flip is a claim that no attribute has a side, and
    translations already give the small invariance the classifier needs."""
    if max_shift == 0:
        return images
    height, width = images.shape[-2:]
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets)])


def evaluate_classifier(model: AttributeClassifier, images: torch.Tensor, attributes: torch.Tensor,
                        batch_size: int = 256) -> dict:
    """Validation metrics on uint8 images and their CelebA attributes (N, 40): BCE loss, accuracy and balanced
    accuracy per attribute and their means, and the accuracy of always answering the majority class (the baseline
    that plain accuracy has to beat)."""
    targets = targets_from_celeba(attributes, model.attributes)
    logits = metrics.classifier_outputs(model, images, batch_size=batch_size)
    loss = F.binary_cross_entropy_with_logits(logits, targets.float()).item()
    accuracy = metrics.prediction_accuracy(logits > 0, targets, model.attributes)
    rate = targets.float().mean(dim=0)
    majority = torch.maximum(rate, 1 - rate)
    balanced = balanced_accuracy(logits > 0, targets)
    names = model.attributes
    return {"loss": loss, "mean_accuracy": accuracy["mean"], "accuracy": accuracy["per_attribute"],
            "mean_balanced_accuracy": balanced.nanmean().item(),
            "balanced_accuracy": dict(zip(names, balanced.tolist())),
            "majority_baseline": dict(zip(names, majority.tolist())),
            "mean_majority_baseline": majority.mean().item(), "n_images": len(images)}


def balanced_accuracy(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per attribute, the mean of the accuracy on positives and on negatives (NaN where a class is absent).

    Plain accuracy hides rare attributes: always answering "not bald" is 97% accurate. Balanced accuracy gives
    that answer 50%, and it is what matters when samples are asked for a rare attribute."""
    predicted, positive = predicted.bool(), targets.bool()
    on_positives = (predicted & positive).sum(0) / positive.sum(0)
    on_negatives = (~predicted & ~positive).sum(0) / (~positive).sum(0)
    return (on_positives + on_negatives) / 2


def train_classifier(profile: Profile | None = None, train: tuple[torch.Tensor, torch.Tensor] | None = None,
                     valid: tuple[torch.Tensor, torch.Tensor] | None = None, folder: Path | None = None,
                     steps: int | None = None, stop_after: int | None = None, resume: bool = True,
                     progress: bool = True) -> ClassifierRun:
    """Train (or resume) the profile's attribute classifier on (uint8 images (N, 3, S, S), CelebA attributes (N, 40)).

    Loss: binary cross-entropy on each of the 18 attributes. Without data, the profile's train / valid splits are
    loaded (SynthFaces generated first if missing). `stop_after` ends the run early at that step, with a checkpoint,
    as an interruption would; calling again with `resume=True` continues exactly. The finished model is saved in
    `folder` (default `artifacts/<profile>/classifier`) with metrics.json."""
    profile = profile or get_profile()
    cfg = profile.classifier
    steps = cfg.steps if steps is None else steps
    folder = Path(folder or classifier_folder(profile))
    train_images, train_attributes = train if train is not None else _load_split(profile, "train", progress)
    valid_images, valid_attributes = valid if valid is not None else _load_split(profile, "valid", progress)
    _check_split(train_images, train_attributes, "train")
    _check_split(valid_images, valid_attributes, "valid")
    if not torch.is_tensor(valid_images):  # streamed (real CelebA): score a fixed subset, decoded once
        valid_images, valid_attributes = valid_images[:STREAMED_VALID], valid_attributes[:STREAMED_VALID]
    train_targets = targets_from_celeba(train_attributes).float()
    pos_weight = positive_weights(train_targets)

    torch.manual_seed(cfg.seed)
    # channels_last lets the CPU's oneDNN convolutions skip layout conversions (~1.5x faster training here).
    model = AttributeClassifier.from_profile(profile).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=WEIGHT_DECAY)
    settings = {**asdict(cfg), "n_train": len(train_images)}
    with Engine("classifier", folder, steps, settings=settings, val_every=max(steps // VALIDATIONS_PER_RUN, 1),
                items_per_step=cfg.batch_size, stop_after=stop_after, resume=resume, progress=progress) as engine:
        scheduler = cosine_with_warmup(optimizer, warmup=warmup_steps(engine.total, 50), total=engine.total)
        model, optimizer, scheduler = engine.prepare(model=model, optimizer=optimizer, scheduler=scheduler)
        train_targets, pos_weight = train_targets.to(engine.device), pos_weight.to(engine.device)
        batches = step_batches(train_images, engine.start, engine.end, cfg.batch_size, cfg.seed, engine.device,
                               profile.data.num_workers)
        model.train()
        for step, (index, batch) in zip(engine.steps(), batches):
            x = random_shift(from_uint8(batch), MAX_SHIFT, step_generator(cfg.seed, step))
            x = x.contiguous(memory_format=torch.channels_last)
            with engine.autocast():
                loss = classifier_loss(model, x, train_targets[index.to(engine.device)], pos_weight)
            engine.optimize(loss, optimizer, scheduler)
            engine.log(loss=loss, lr=scheduler.get_last_lr()[0])
            if engine.validating:
                engine.extra["metrics"] = {"step": engine.done,
                                           **evaluate_classifier(engine.unwrap(model), valid_images, valid_attributes)}
                model.train()
                engine.validation.append({"step": engine.done, "loss": engine.extra["metrics"]["loss"],
                                          "mean_accuracy": engine.extra["metrics"]["mean_accuracy"]})
        run = ClassifierRun(model=engine.unwrap(model), folder=folder, history=engine.history,
                            validation=engine.validation, metrics=engine.extra.get("metrics", {}),
                            seconds=engine.seconds, images_per_second=engine.items_per_second)
        if engine.saves_trained(folder / "model.safetensors"):
            save_trained(run, recipe=training_recipe(cfg))
    return run


def classifier_loss(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each attribute, positives weighted by `pos_weight`; in fp32 under autocast."""
    return F.binary_cross_entropy_with_logits(model(x).float(), targets, pos_weight=pos_weight)


def _load_split(profile: Profile, split: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from facegen.data.images import load_images

    return load_images(profile, split, attributes=True, progress=progress)


def _check_split(images, attributes: torch.Tensor, name: str) -> None:
    if not is_image_batch_source(images):
        got = f"{images.dtype} {tuple(images.shape)}" if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"train_classifier: {name} images must be uint8 (N, 3, H, W) (or a FaceImages), got {got}")
    if len(attributes) != len(images):
        raise ValueError(f"train_classifier: {name} has {len(images)} images but {len(attributes)} attribute rows")


def save_trained(run: ClassifierRun, recipe: dict) -> Path:
    """config.json + model.safetensors + metrics.json + the `recipe` it was trained with (checkpoint.RECIPE_FILE) in
    `run.folder` (plus history.json), model files last."""
    folder = run.folder
    write_recipe(folder, recipe)
    atomic_write_json(folder / METRICS, {**run.metrics, "seconds": run.seconds,
                                         "images_per_second": run.images_per_second})
    atomic_write_json(folder / HISTORY, {"train": run.history, "validation": run.validation, "seconds": run.seconds})
    # save_pretrained writes in place; write to a temporary folder and move the files, weights last, so that a
    # present model.safetensors always means a complete model.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".save-") as tmp:
        cpu_copy(run.model).save_pretrained(tmp)
        for name in ("config.json", "model.safetensors"):
            os.replace(Path(tmp) / name, folder / name)
    return folder


def load_classifier(folder: Path, device: str = "cpu") -> AttributeClassifier:
    """A trained classifier from its folder (config.json + model.safetensors), loaded strictly, in eval mode."""
    model = load_model_folder(AttributeClassifier, folder, "attribute classifier",
                              "train one with facegen.pipeline.ensure_classifier")
    return model.to(device, memory_format=torch.channels_last).eval()
