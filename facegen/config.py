"""Profiles: one switch (FACEGEN_PROFILE = ci | cpu | gpu) sets every size, step count and seed in the course.

- ci:  tiny models on a few hundred SynthFaces; each notebook runs in seconds (used by `pytest --nbval`).
- cpu: the course on a laptop CPU; every notebook in <= 10 minutes on 2 cores.
- gpu: real CelebA at the seed's scale (GPT-2 small, AMP, batch 40 x accumulation 2, 5 epochs).

The codebook size, the 16x16 token grid and the attribute list are the same in `ci` and `cpu`, so cells that print
formats and shapes give identical output in both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

PROFILE_NAMES = ("ci", "cpu", "gpu")
# Artifacts and data live next to the checkout; a pip-installed facegen (e.g. on Colab) uses the working directory.
_CHECKOUT = Path(__file__).resolve().parent.parent
REPO_ROOT = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()
REPOSITORY_URL = "https://github.com/facegen-course/facegen"  # the one place for badges and Colab installs


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthfaces"  # "synthfaces" | "celeba" (folder layout) | "hf" (flwrlabs/celeba shaped dataset)
    n_images: int = 6000  # SynthFaces images to generate (ignored for real CelebA)
    image_size: int = 128  # side of the square model input, after cropping to the face
    seed: int = 0
    num_workers: int = 0  # DataLoader workers; 0 keeps notebooks simple and deterministic
    # True: trainers get each split as a FaceImages (decoded per batch by `num_workers` DataLoader workers) instead
    # of one uint8 tensor in RAM; real CelebA's training split would take ~8 GB as a tensor
    stream: bool = False


@dataclass(frozen=True)
class VQVAEConfig:
    codebook_size: int = 512  # K; ids 0..K-1 are the image tokens
    embed_dim: int = 64  # code vector size
    hidden: int = 64  # channels of the widest conv layer
    n_res_blocks: int = 2
    beta: float = 0.25  # commitment weight
    ema: bool = True  # EMA codebook updates instead of the codebook loss
    ema_decay: float = 0.99
    restart_after: int = 50  # re-seed codes unused for this many steps
    # cpu: ~6 minutes on an idle 2-core Xeon, validation PSNR ~29.7 dB. Issue 16 measured where a bigger budget goes
    # (benchmarks/README.md): 1.8x the steps beat a 1.5x wider or 4x deeper model of the same training time.
    steps: int = 4320
    batch_size: int = 16  # small batches: more updates per image seen, which is what a CPU budget needs
    lr: float = 2e-3
    val_every: int = 400
    seed: int = 0
    # The bottleneck: "vq", the learned codebook of facegen/quantize.py. `FSQVAEConfig` below is the same model with
    # finite scalar quantization instead. A class attribute, not a field: the settings a VQ run's checkpoint records
    # (`asdict(cfg)`) stay what they were before FSQ existed, so earlier checkpoints still resume.
    quantizer: ClassVar[str] = "vq"


@dataclass(frozen=True)
class FSQVAEConfig(VQVAEConfig):
    """The VQ-VAE with finite scalar quantization (facegen/fsq.py) instead of the learned codebook: the encoder ends in
    len(fsq_levels) channels, each rounded to its number of levels; no codebook to learn, no VQ loss. codebook_size
    must equal the product of the levels; embed_dim, beta, ema, ema_decay and restart_after are unused. A profile
    switches with `profile.replace(vqvae={"quantizer": "fsq"})` (every other setting kept); compared with the VQ
    one in benchmarks/bench_tokenizers.py."""

    quantizer: ClassVar[str] = "fsq"
    fsq_levels: tuple[int, ...] = (8, 8, 8)  # 8 * 8 * 8 = 512 codes, the VQ-VAE's codebook size

    def __post_init__(self):
        if math.prod(self.fsq_levels) != self.codebook_size:
            raise ValueError(f"vqvae.fsq_levels {tuple(self.fsq_levels)} make {math.prod(self.fsq_levels)} codes but "
                             f"vqvae.codebook_size is {self.codebook_size}: set codebook_size to their product")


@dataclass(frozen=True)
class L2VQVAEConfig(VQVAEConfig):
    """The VQ-VAE with low-dimensional l2-normalised codes (facegen.quantize.L2VectorQuantizer; ViT-VQGAN, LlamaGen):
    the encoder ends in `l2_dim` channels, put on the unit sphere with the codes; embed_dim is unused. Issue 16's
    lever, off unless chosen: `profile.replace(vqvae={"quantizer": "l2"})`; measured in benchmarks/bench_tokenizers.py.
    A subclass, so that the settings a VQ run records stay as they were (see `quantizer` above)."""

    quantizer: ClassVar[str] = "l2"
    l2_dim: int = 8  # LlamaGen's codebook dimension; ViT-VQGAN uses 32 at 8192 codes


VQVAE_CONFIGS = {"vq": VQVAEConfig, "fsq": FSQVAEConfig, "l2": L2VQVAEConfig}  # vqvae.quantizer -> the config class


@dataclass(frozen=True)
class GPTConfig:
    # cpu: 0.9M parameters; 3,200 steps x 8 sequences (~5.3 epochs of 4,800 faces) train in 7-8 minutes on 2 cores
    # to 2.09 nats/token (its weights' average; the last step's 2.10) against a unigram baseline of 6.13 (the
    # 4,320-step VQ-VAE's tokens; measured, see benchmarks/README.md, "How wide a GPT for notebook 05's minutes"
    # and "Averaging the weights"). At this budget the model is compute-bound
    # (training and validation loss agree), so a narrower model that takes more steps wins: 192 wide, 1,600 steps
    # reached 2.25 in 5.5-5.8 minutes; 128 wide, 3,200 steps 2.10 in 7.0; 96 wide, 4,000 steps 2.14 in 7.5. The same
    # tokens in half as many steps of twice the batch end higher.
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    dropout: float = 0.0
    lr: float = 2e-3  # small models take a large learning rate; the gpu profile uses the seed's 2e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    batch_size: int = 8
    grad_accum: int = 1
    steps: int | None = 3200  # optimizer steps; None -> `epochs` over the training split
    epochs: int = 1
    mixed_precision: str = "auto"  # "auto" = bf16/fp16 on CUDA, fp32 on CPU (most CPUs emulate bf16)
    p_drop_all: float = 0.1  # classifier-free guidance: all attributes -> ? with this probability
    # and each single attribute -> ? with this one. Measured on cpu, two seeds, held-out guided samples at s = 3:
    # 0.05 shows 84.6% / 86.2% of the attributes asked present against 77.8% / 85.1% with 0.15, at the same
    # validation loss (benchmarks/README.md, "Attribute dropout"); unmeasured on the gpu profile
    p_drop_one: float = 0.05
    # Image positions start as 2-D sinusoids of (row, column) (gpt.grid_position_embeddings). Measured on cpu,
    # 1,000 steps: validation 2.335 vs 2.353 nats/token, guided attribute accuracy 87.8% vs 86.4% (s = 5).
    grid_positions: bool = True
    # "scratch": every weight starts random. "gpt2": the seed card's route, the transformer blocks start from the
    # pretrained GPT-2 `pretrained` (a hub name or a save_pretrained folder; needs the same n_layer/n_embd/n_head),
    # token and position embeddings resized to this vocabulary and length (facegen.gpt.init_from_pretrained)
    init: str = "scratch"
    pretrained: str = "gpt2"
    # a torch.compile backend for training ("inductor" fuses LayerNorm, GELU and dropout into fewer kernels on a GPU;
    # the first steps then compile for a minute), or None for eager PyTorch. Unmeasured on a GPU so far: off.
    compile: str | None = None
    # The saved model is the exponential moving average of the weights over the last ~1 / (1 - ema_decay) steps
    # (facegen.train.averaging, with TensorFlow's warm-up, so a short run averages only its own late steps; 0 = the
    # last step's weights). Measured on cpu, two seeds: 0.99 ends 0.013-0.014 nats/token
    # below the last step's weights (2.104 -> 2.090, 2.120 -> 2.107); 0.995 and 0.998 gain less.
    ema_decay: float = 0.99
    val_every: int = 400
    seed: int = 0


@dataclass(frozen=True)
class ClassifierConfig:
    """The small attribute classifier used to judge samples (accuracy, Frechet distance)."""

    width: int = 32
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


@dataclass(frozen=True)
class VQGANConfig:
    """The small VQGAN of the comparison chapter (taming's architecture and losses; facegen/vqgan_training.py)."""

    ch: int = 32  # the smallest width GroupNorm(32) allows: the 128 px ResNet blocks dominate the cost
    ch_mult: tuple[int, ...] = (1, 1, 2, 2)  # f8 at 128 px -> 16x16 tokens, the VQ-VAE's grid
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 64
    embed_dim: int = 64
    n_embed: int = 512
    steps: int = 500  # cpu: see benchmarks/README.md for the measured time
    disc_start: int = 250  # GAN term off before this step (taming's `disc_start`)
    batch_size: int = 16
    crop_size: int | None = 64  # train on random crops (taming trains on crops too): 4x more images per second
    lr: float = 5e-4  # generator and discriminator, Adam betas (0.5, 0.9)
    perceptual_weight: float = 1.0
    disc_weight: float = 0.8  # taming's f16-16384 config
    disc_channels: int = 32  # PatchGAN width (taming: 64)
    disc_layers: int = 3  # 70 px patches
    restart_every: int = 50  # re-seed codes unused for this many steps with current encoder outputs
    val_every: int = 125
    seed: int = 0


@dataclass(frozen=True)
class GANDecoderConfig:
    """Fine-tuning the VQ-VAE's decoder with the VQGAN losses, tokens unchanged (facegen/gan_decoder.py)."""

    steps: int = 1000  # cpu: ~5 minutes on 2 cores; 1,500 steps sharpen more (benchmarks/README.md)
    disc_start: int = 100  # the decoder is already trained: the GAN term can start almost at once
    batch_size: int = 8
    lr: float = 1e-4  # a fine-tune: 20x below the VQ-VAE's learning rate
    perceptual_weight: float = 0.1
    disc_weight: float = 0.8  # taming's f16-16384 config
    disc_channels: int = 32  # PatchGAN width (taming: 64)
    disc_layers: int = 3  # 70 px patches
    # "spectral": spectral norm instead of taming's BatchNorm. Measured (benchmarks/README.md, "Against speckle"): less
    # fine colour noise in the eyes (2.38x the originals' against 2.95x), +0.5 dB PSNR, the same judge FD.
    disc_norm: str = "spectral"
    r1_gamma: float = 0.0  # R1 penalty on real faces (0 = off, taming's); issue 16's other lever against speckle
    # > 1: the discriminator sees colour averaged over blocks of this many pixels, brightness in full
    # (vqgan_losses.ColourBlurredInput); 1 = full colour, taming's. Measured with 4 and 8 ("Against speckle"): colour
    # detail around the eyes 2.38x -> 2.09x the originals', the rest the same, no change the crops show: off
    disc_colour_block: int = 1
    ema_decay: float = 0.995  # the saved decoder averages the last ~200 steps' weights (0 = the last step's)
    val_every: int = 250
    seed: int = 0


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    data: DataConfig = field(default_factory=DataConfig)
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    gpt: GPTConfig = field(default_factory=GPTConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    gan_decoder: GANDecoderConfig = field(default_factory=GANDecoderConfig)
    psnr_floor: float = 28.0  # validation PSNR (dB) the trained VQ-VAE must beat; asserted in notebook 02

    @property
    def device(self) -> str:
        """Where every stage of this profile runs, training or not: "cuda" when a GPU is visible, else "cpu".
        The loaders (facegen.pipeline.ensure_*) put models here; pass `device=` to them to choose otherwise."""
        return default_device()

    @property
    def artifacts(self) -> Path:
        """Where this profile's trained models and token shards live (git-ignored)."""
        return Path(os.environ.get("FACEGEN_ARTIFACTS", REPO_ROOT / "artifacts")) / self.name

    def tokenizer_artifacts(self, stage: str) -> Path:
        """artifacts/<profile>/<stage> for a stage built on the tokenizer ("vqvae", "tokens", "gpt"). With a bottleneck
        other than the default VQ the folder carries its name (vqvae-fsq, tokens-fsq, gpt-fsq), so an FSQ tokenizer
        and the GPT trained on its tokens sit beside the VQ ones instead of replacing them; the data, the classifiers
        and everything else stay shared."""
        quantizer = self.vqvae.quantizer
        return self.artifacts / (stage if quantizer == "vq" else f"{stage}-{quantizer}")

    @property
    def data_dir(self) -> Path:
        """Where this profile's dataset lives in the CelebA folder layout (SynthFaces is generated there)."""
        if "FACEGEN_DATA" in os.environ:
            return Path(os.environ["FACEGEN_DATA"])
        folder = "celeba" if self.data.source != "synthfaces" else f"synthfaces-{self.name}"
        return REPO_ROOT / "data" / folder

    def replace(self, **sections) -> "Profile":
        """A copy with some fields changed, e.g. `profile.replace(vqvae={"steps": 10})`. `vqvae={"quantizer": "fsq"}`
        (or "vq") switches the VQ-VAE's config class, keeping every setting the two share."""
        changes = {}
        for key, value in sections.items():
            current = getattr(self, key)
            if key == "vqvae" and isinstance(value, dict) and "quantizer" in value:
                value = dict(value)
                kind = value.pop("quantizer")
                if kind not in VQVAE_CONFIGS:
                    raise ValueError(f"vqvae.quantizer must be one of {', '.join(map(repr, VQVAE_CONFIGS))}, "
                                     f"got {kind!r}")
                target = VQVAE_CONFIGS[kind]
                shared = {f.name: getattr(current, f.name) for f in dataclasses.fields(target)
                          if hasattr(current, f.name)}
                changes[key] = target(**{**shared, **value})
                continue
            changes[key] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci",
        description="tiny models on 320 SynthFaces, seconds per notebook (CI)",
        data=DataConfig(n_images=320),
        vqvae=VQVAEConfig(embed_dim=32, hidden=32, n_res_blocks=1, steps=60, batch_size=16, val_every=30,
                          restart_after=20),
        gpt=GPTConfig(n_layer=2, n_embd=64, n_head=4, steps=40, batch_size=8, warmup_steps=5, val_every=20),
        classifier=ClassifierConfig(width=16, steps=60, batch_size=32),
        vqgan=VQGANConfig(ch=32, ch_mult=(1, 1, 1, 1), z_channels=32, embed_dim=32, steps=30, disc_start=15,
                          batch_size=4, crop_size=32, disc_channels=16, restart_every=10, val_every=15),
        gan_decoder=GANDecoderConfig(steps=30, disc_start=10, batch_size=4, disc_channels=16, ema_decay=0.9,
                                     val_every=15),
        psnr_floor=14.0,
    ),
    "cpu": Profile(
        name="cpu",
        description="the course on a laptop CPU: 6,000 SynthFaces, <= 10 minutes per notebook on 2 cores",
    ),
    "gpu": Profile(
        name="gpu",
        description="real CelebA at the seed's scale: GPT-2 small (12x768), AMP, batch 40 x 2, 5 epochs",
        data=DataConfig(source="celeba", n_images=0, num_workers=4, stream=True),
        vqvae=VQVAEConfig(embed_dim=64, hidden=128, n_res_blocks=2, steps=20000, batch_size=64, lr=1e-3,
                          val_every=1000),
        gpt=GPTConfig(n_layer=12, n_embd=768, n_head=12, dropout=0.1, lr=2e-4, weight_decay=0.01,
                      warmup_steps=500, batch_size=40, grad_accum=2, steps=None, epochs=5, ema_decay=0.999,
                      val_every=1000),  # ~10,000 steps: the average spans the last ~1,000 (unmeasured on CelebA)
        classifier=ClassifierConfig(width=64, steps=5000, batch_size=128),
        vqgan=VQGANConfig(ch=128, z_channels=256, embed_dim=256, num_res_blocks=2, n_embed=1024, steps=50000,
                          disc_start=10000, batch_size=16, lr=4.5e-6 * 16, crop_size=None, disc_channels=64,
                          val_every=1000),
        gan_decoder=GANDecoderConfig(steps=10000, disc_start=1000, batch_size=16, disc_channels=64, ema_decay=0.999,
                                     val_every=1000),
        psnr_floor=24.0,
    ),
}


# Settings that change how a run goes, not what it learns: a model trained with other values of these is the same.
RUN_ONLY_SETTINGS = ("val_every", "compile")


def training_recipe(section) -> dict:
    """What decides the weights a run of this profile section (`VQVAEConfig`, `GPTConfig`, ...) learns, as the JSON
    values it reads back as: every setting but RUN_ONLY_SETTINGS, plus the quantizer of the VQ-VAE family (a class
    attribute). Saved beside a trained model, so that facegen.pipeline can tell a model the profile would no longer
    train from a current one."""
    recipe = {key: value for key, value in dataclasses.asdict(section).items() if key not in RUN_ONLY_SETTINGS}
    if hasattr(section, "quantizer"):
        recipe["quantizer"] = section.quantizer
    return json.loads(json.dumps(recipe))  # tuples -> lists, as the saved copy reads back


_UNSET = "(unset)"


def _flatten(settings: dict, prefix: str = "") -> dict:
    """{"gpt": {"lr": 2e-3}} -> {"gpt.lr": 2e-3}: a changed setting is then named alone, not with all its section."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(saved: dict, current: dict) -> str:
    """The settings that differ, one by one, nested keys dotted: "gpt.lr 0.002 -> 0.003, steps 1600 -> (unset)";
    "" when none do."""
    saved, current = _flatten(saved), _flatten(current)
    changed = sorted(key for key in set(saved) | set(current) if saved.get(key, _UNSET) != current.get(key, _UNSET))

    def shown(settings: dict, key: str) -> str:
        return repr(settings[key]) if key in settings else _UNSET

    return ", ".join(f"{key} {shown(saved, key)} -> {shown(current, key)}" for key in changed)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_profile_name() -> str:
    """FACEGEN_PROFILE when set, else `gpu` with CUDA, else `cpu`."""
    name = os.environ.get("FACEGEN_PROFILE", "").strip().lower()
    if name:
        if name not in PROFILES:
            raise ValueError(f"FACEGEN_PROFILE={name!r} is not a profile; expected one of {', '.join(PROFILE_NAMES)}")
        return name
    return "gpu" if cuda_available() else "cpu"


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name`, or the active one (see `default_profile_name`)."""
    name = default_profile_name() if name is None else name.strip().lower()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]


def default_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu": the one place that decides (`Profile.device` asks it)."""
    return "cuda" if cuda_available() else "cpu"


def describe(profile: Profile | None = None) -> str:
    """One readable line: the active profile, what it means, and the device it will run on."""
    profile = profile or get_profile()
    import torch

    if torch.cuda.is_available():
        where = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        where = f"cpu ({torch.get_num_threads()} threads)"
    return f"profile {profile.name!r}: {profile.description}; device: {where}"
