"""ensure_* helpers: build any missing prerequisite artifact for the active profile, so every notebook runs standalone.

Each helper returns the artifact's location; when it has to build it, it first prints one line saying what it builds
and why, and shows a progress bar while it works. Each returns its model on `device`, by default the profile's
(`Profile.device`: cuda when a GPU is visible, else cpu), so every later stage (tokenizing, sampling, judging) runs
there too.
"""

from __future__ import annotations

from pathlib import Path

from facegen.config import Profile, get_profile
from facegen.data.images import ensure_synthfaces, load_images, synthfaces_complete  # noqa: F401 (re-exported)
from facegen.notes import note as _note


def ensure_vqvae(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's trained VQ-VAE (eval mode), training it first when `artifacts/<profile>/vqvae/model` is missing."""
    from facegen.vqvae_training import MODEL_DIR, load_vqvae, train_vqvae, vqvae_folder

    profile = profile or get_profile()
    folder = vqvae_folder(profile)
    if not (folder / MODEL_DIR / "model.safetensors").is_file():
        _note(f"training the {profile.name!r} VQ-VAE into {folder} (needed by this notebook; done once)")
        train_vqvae(profile, progress=progress)
    return load_vqvae(folder, device=device or profile.device)


def ensure_tokens(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's dataset as VQ-VAE tokens (a `datasets.DatasetDict`: train / valid / test with columns `codes`,
    `attributes`, `index`), encoding it first when it is missing or was made with another VQ-VAE or other data
    (`tokenize_dataset` then prints one line saying why)."""
    from facegen.tokenize_dataset import tokenize_dataset

    profile = profile or get_profile()
    ensure_synthfaces(profile, progress=progress)
    return tokenize_dataset(profile, vqvae=ensure_vqvae(profile, progress=progress, device=device),
                            progress=progress)


def ensure_gpt(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's trained GPT as `(model, tokenizer, vocab, metadata)` (a `facegen.gpt.LoadedGPT`), training it
    first when `artifacts/<profile>/gpt/model` is missing or was trained on another VQ-VAE's tokens."""
    from facegen.gpt import check_gpt_matches_vqvae, gpt_folder, gpt_stale_reason, load_gpt, train_gpt
    from facegen.tokenize_dataset import read_token_info, tokens_folder

    profile = profile or get_profile()
    splits = ensure_tokens(profile, progress=progress, device=device)
    vqvae = read_token_info(tokens_folder(profile)).vqvae
    folder = gpt_folder(profile)
    reason = gpt_stale_reason(folder, vqvae)
    if reason is not None:
        _note(f"training the {profile.name!r} GPT into {folder} ({reason}; needed by this notebook; done once)")
        train_gpt(profile, splits=splits, progress=progress, vqvae_fingerprint=vqvae)
    loaded = load_gpt(folder, device=device or profile.device)
    check_gpt_matches_vqvae(loaded.metadata, vqvae)
    return loaded


def ensure_classifier(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's attribute classifier (eval mode), training it first when
    `artifacts/<profile>/classifier/model.safetensors` is missing. It judges samples: attribute accuracy and the
    Frechet distance of its features (facegen.metrics)."""
    from facegen.classifier import classifier_folder, load_classifier, train_classifier

    profile = profile or get_profile()
    folder = classifier_folder(profile)
    if not (folder / "model.safetensors").is_file():
        _note(f"training the {profile.name!r} attribute classifier into {folder} (it judges generated faces; "
              "done once)")
        train_classifier(profile, folder=folder, progress=progress)
    return load_classifier(folder, device=device or profile.device)


def ensure_judge_classifier(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """A second attribute classifier, trained exactly like the first but from another seed, that only ever judges.
    The VQGAN losses use the first classifier's features as their perceptual distance, so a Frechet distance in
    those same features would reward matching them rather than looking right; this one never enters a loss."""
    from facegen.classifier import load_classifier, train_classifier

    profile = profile or get_profile()
    folder = profile.artifacts / "classifier_judge"
    if not (folder / "model.safetensors").is_file():
        _note(f"training the {profile.name!r} judge classifier into {folder} (an independent judge; done once)")
        judge = profile.replace(classifier={"seed": profile.classifier.seed + 1})
        train_classifier(judge, folder=folder, progress=progress)
    return load_classifier(folder, device=device or profile.device)


def ensure_gan_decoder(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's VQ-VAE with its decoder fine-tuned by the VQGAN losses (eval mode; same tokens), fine-tuning it
    first when `artifacts/<profile>/gan_decoder/model` is missing or was made from another VQ-VAE."""
    from facegen.gan_decoder import gan_decoder_folder, gan_decoder_stale_reason, load_gan_decoder, train_gan_decoder
    from facegen.tokenize_dataset import vqvae_fingerprint

    profile = profile or get_profile()
    vqvae = ensure_vqvae(profile, progress=progress, device=device)
    folder = gan_decoder_folder(profile)
    reason = gan_decoder_stale_reason(folder, vqvae_fingerprint(vqvae))
    if reason is not None:
        _note(f"fine-tuning the {profile.name!r} VQ-VAE decoder with the VQGAN losses into {folder} ({reason}; "
              "needed by this notebook; done once)")
        train_gan_decoder(profile, vqvae=vqvae, resume=reason == "no fine-tuned decoder yet", progress=progress)
    return load_gan_decoder(folder, device=device or profile.device)


def ensure_vqgan(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's small VQGAN (eval mode), training it first when `artifacts/<profile>/vqgan/model` is missing.
    Its perceptual loss needs the attribute classifier (or LPIPS when present locally), built first if missing."""
    from facegen.vqgan_training import MODEL_DIR, load_trained_vqgan, train_vqgan, vqgan_folder

    profile = profile or get_profile()
    folder = vqgan_folder(profile)
    if not (folder / MODEL_DIR / "model.safetensors").is_file():
        _note(f"training the {profile.name!r} small VQGAN into {folder} (needed by this notebook; done once)")
        train_vqgan(profile, progress=progress)
    return load_trained_vqgan(folder, device=device or profile.device)
