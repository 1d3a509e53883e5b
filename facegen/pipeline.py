"""ensure_* helpers: build any missing prerequisite artifact for the active profile, so every notebook runs standalone.

Each helper returns the artifact's location; when it has to build it, it first prints one line saying what it builds
and why, and shows a progress bar while it works. Each returns its model on `device`, by default the profile's
(`Profile.device`: cuda when a GPU is visible, else cpu), so every later stage (tokenizing, sampling, judging) runs
there too. A helper only ever builds what is missing: a trained model that no longer fits (stale, unreadable) is
never replaced behind the user's back; it raises an error naming the folder and the command that retrains it
(`facegen train-... --restart`). Stale includes trained with settings the profile no longer has (a course
update that changed them): every trained model records its recipe (`config.training_recipe`) in a facegen.json
beside its weights, and the error names each setting that changed.
While it trains, a helper holds the artifact folder's lock (`checkpoint.artifact_lock`).
"""

from __future__ import annotations

from pathlib import Path

from facegen.config import Profile, changed_settings, get_profile, training_recipe
from facegen.data.images import ensure_synthfaces, load_images, synthfaces_complete  # noqa: F401 (re-exported)
from facegen.errors import ArtifactError
from facegen.notes import note as _note

BUILDING = "none there yet; built once"  # why a helper builds: the same words in a notebook and on the command line


def ensure_vqvae(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's trained VQ-VAE (eval mode), training it first when `artifacts/<profile>/vqvae/model` is missing.
    One trained with other settings (its recorded recipe), or whose record is unreadable, is an `ArtifactError`."""
    from facegen.checkpoint import artifact_lock
    from facegen.vqvae_training import MODEL_DIR, load_vqvae, train_vqvae, vqvae_folder

    profile = profile or get_profile()
    folder = vqvae_folder(profile)
    if not (folder / MODEL_DIR / "model.safetensors").is_file():
        with artifact_lock(folder, "the VQ-VAE"):
            _note(f"training the {profile.name!r} VQ-VAE into {folder} ({BUILDING})")
            train_vqvae(profile, progress=progress)
    if profile.vqvae.quantizer == "vq":
        how = f"`facegen train-vqvae --restart --profile {profile.name}`"
    else:  # the CLI trains the profile's own VQ-VAE only
        how = "`facegen.vqvae_training.train_vqvae(profile, resume=False)` with this profile"
    refuse_other_recipe(folder / MODEL_DIR, profile.vqvae, "VQ-VAE", how, profile.name)
    return load_vqvae(folder, device=device or profile.device)


def _retrain(how: str) -> str:
    return (f"facegen does not replace a trained model by itself: retrain it with {how}, or restore the folder from "
            "a backup")


def refuse_other_recipe(folder: Path, section, what: str, how: str, profile_name: str) -> None:
    """An ArtifactError naming each setting that differs when the `what` model saved in `folder` was trained with a
    recipe (`checkpoint.saved_recipe`) other than the one the profile's `section` now gives, or when its record is
    unreadable (`how` retrains it). A model saved before facegen recorded recipes is not checked."""
    from facegen.checkpoint import saved_recipe

    try:
        recipe = saved_recipe(folder)
    except ValueError as error:
        raise ArtifactError(f"{error}; {_retrain(how)}") from None
    changes = None if recipe is None else changed_settings(recipe, training_recipe(section))
    if changes:
        raise ArtifactError(f"the {what} in {folder} was trained with settings the {profile_name!r} profile no longer "
                            f"has (trained -> now: {changes}); {_retrain(how)}")


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
    first when there is none (`artifacts/<profile>/gpt/model` missing). One that was trained on another VQ-VAE's
    tokens or with other settings, or cannot be read, is not replaced: an `ArtifactError` names it and the command
    that retrains it."""
    from facegen.checkpoint import artifact_lock
    from facegen.gpt import MODEL_DIR, check_gpt_matches_vqvae, gpt_folder, load_gpt, train_gpt
    from facegen.tokenize_dataset import read_token_info, tokens_folder

    profile = profile or get_profile()
    splits = ensure_tokens(profile, progress=progress, device=device)
    vqvae = read_token_info(tokens_folder(profile)).vqvae
    folder = gpt_folder(profile)
    if not (folder / MODEL_DIR).exists():
        with artifact_lock(folder, "the GPT"):
            _note(f"training the {profile.name!r} GPT into {folder} ({BUILDING})")
            train_gpt(profile, splits=splits, progress=progress, vqvae_fingerprint=vqvae)
    retrain = f"`facegen train-gpt --restart --profile {profile.name}`"
    try:
        loaded = load_gpt(folder, device=device or profile.device)
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{error}; {_retrain(retrain)}") from None
    try:
        check_gpt_matches_vqvae(loaded.metadata, vqvae)
    except ValueError as error:
        raise ArtifactError(f"the GPT in {folder / MODEL_DIR}: {error}") from None
    refuse_other_recipe(folder / MODEL_DIR, profile.gpt, "GPT", retrain, profile.name)
    return loaded


def ensure_classifier(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's attribute classifier (eval mode), training it first when
    `artifacts/<profile>/classifier/model.safetensors` is missing. It judges samples: attribute accuracy and the
    Frechet distance of its features (facegen.metrics)."""
    from facegen.checkpoint import artifact_lock
    from facegen.classifier import classifier_folder, load_classifier, train_classifier

    profile = profile or get_profile()
    folder = classifier_folder(profile)
    if not (folder / "model.safetensors").is_file():
        with artifact_lock(folder, "the attribute classifier"):
            _note(f"training the {profile.name!r} attribute classifier into {folder} (it judges generated faces; "
                  f"{BUILDING})")
            train_classifier(profile, folder=folder, progress=progress)
    refuse_other_recipe(folder, profile.classifier, "attribute classifier", _retrain_classifier(folder),
                        profile.name)
    return load_classifier(folder, device=device or profile.device)


def ensure_judge_classifier(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """A second attribute classifier, trained exactly like the first but from another seed, that only ever judges.
    The VQGAN losses use the first classifier's features as their perceptual distance, so a Frechet distance in
    those same features would reward matching them rather than looking right; this one never enters a loss."""
    from facegen.checkpoint import artifact_lock
    from facegen.classifier import load_classifier, train_classifier

    profile = profile or get_profile()
    folder = profile.artifacts / "classifier_judge"
    if not (folder / "model.safetensors").is_file():
        with artifact_lock(folder, "the judge classifier"):
            _note(f"training the {profile.name!r} judge classifier into {folder} (an independent judge; {BUILDING})")
            train_classifier(judge_profile(profile), folder=folder, progress=progress)
    refuse_other_recipe(folder, judge_profile(profile).classifier, "judge classifier", _retrain_classifier(folder),
                        profile.name)
    return load_classifier(folder, device=device or profile.device)


def judge_profile(profile: Profile) -> Profile:
    """The judge classifier's recipe: the profile's classifier from the next seed."""
    return profile.replace(classifier={"seed": profile.classifier.seed + 1})


def _retrain_classifier(folder: Path) -> str:
    """How to retrain a classifier: there is no CLI command, but its helper trains one where the folder holds none."""
    return f"this helper once its folder is gone (move {folder} aside and run again)"


def ensure_gan_decoder(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's VQ-VAE with its decoder fine-tuned by the VQGAN losses (eval mode; same tokens), fine-tuning it
    first when there is none (`artifacts/<profile>/gan_decoder/model` missing). One made from another VQ-VAE, or
    that cannot be read, is not replaced: an `ArtifactError` names it and the command that redoes it."""
    import json

    from facegen.checkpoint import artifact_lock
    from facegen.gan_decoder import BASE_FILE, MODEL_DIR, gan_decoder_folder, load_gan_decoder, train_gan_decoder
    from facegen.tokenize_dataset import vqvae_fingerprint

    profile = profile or get_profile()
    vqvae = ensure_vqvae(profile, progress=progress, device=device)
    folder = gan_decoder_folder(profile)
    model_dir = folder / MODEL_DIR
    if not model_dir.exists():
        with artifact_lock(folder, "the GAN-tuned decoder"):
            _note(f"fine-tuning the {profile.name!r} VQ-VAE decoder with the VQGAN losses into {folder} ({BUILDING})")
            train_gan_decoder(profile, vqvae=vqvae, classifier=perceptual_classifier(profile, progress),
                              progress=progress)
    command = f"`facegen train-gan-decoder --restart --profile {profile.name}`"
    redo = f"facegen does not replace a trained model by itself: fine-tune it again with {command}"
    current = vqvae_fingerprint(vqvae)
    try:
        saved = json.loads((model_dir / BASE_FILE).read_text()).get("vqvae_fingerprint")
    except (OSError, ValueError, AttributeError) as error:
        raise ArtifactError(f"{model_dir / BASE_FILE} is unreadable ({error}); expected the JSON that names the "
                            f"VQ-VAE the decoder was fine-tuned from; {redo}") from None
    if saved != current:
        raise ArtifactError(f"the GAN-tuned decoder in {model_dir} was fine-tuned from VQ-VAE {str(saved)[:12]}, not "
                            f"from the current VQ-VAE {current[:12]}; {redo}")
    refuse_other_recipe(model_dir, profile.gan_decoder, "GAN-tuned decoder", command, profile.name)
    try:
        return load_gan_decoder(folder, device=device or profile.device)
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{error}; {redo}") from None


def perceptual_classifier(profile: Profile, progress: bool = True):
    """The network of the VQGAN losses' perceptual term: None when LPIPS is installed with its weights (the losses
    then use it), else the profile's attribute classifier, trained first if missing."""
    from facegen.vqgan_losses import lpips_available

    return None if lpips_available() else ensure_classifier(profile, progress=progress)


def ensure_vqgan(profile: Profile | None = None, progress: bool = True, device: str | None = None):
    """The profile's small VQGAN (eval mode), training it first when `artifacts/<profile>/vqgan/model` is missing.
    Its perceptual loss needs the attribute classifier (or LPIPS when present locally), built first if missing."""
    from facegen.checkpoint import artifact_lock
    from facegen.vqgan_training import MODEL_DIR, load_trained_vqgan, train_vqgan, vqgan_folder

    profile = profile or get_profile()
    folder = vqgan_folder(profile)
    if not (folder / MODEL_DIR / "model.safetensors").is_file():
        with artifact_lock(folder, "the small VQGAN"):
            _note(f"training the {profile.name!r} small VQGAN into {folder} ({BUILDING})")
            train_vqgan(profile, classifier=perceptual_classifier(profile, progress), progress=progress)
    refuse_other_recipe(folder / MODEL_DIR, profile.vqgan, "small VQGAN",
                        f"`facegen train-vqgan --restart --profile {profile.name}`", profile.name)
    return load_trained_vqgan(folder, device=device or profile.device)
