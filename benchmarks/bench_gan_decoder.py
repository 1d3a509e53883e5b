"""The GAN-tuned decoder against colour speckle: taming's PatchGAN beside a spectral-norm one and an R1 penalty.

    python benchmarks/bench_gan_decoder.py [--profile cpu] [--variants taming spectral r1 spectral+r1 colour4 colour8]
        [--r1-gamma G]

Every variant fine-tunes the decoder of the profile's trained VQ-VAE (same tokens) with the profile's
`gan_decoder` settings (steps, learning rate, GAN start, weights, averaged decoder), changing only the discriminator:

- `taming`: taming's PatchGAN with BatchNorm (`gan_decoder.disc_norm = "batch"`), no penalty;
- `spectral`: spectral norm on every discriminator conv instead of BatchNorm (the profiles' default since this
  benchmark);
- `r1`: the R1 penalty on real faces (`gan_decoder.r1_gamma`, default gamma from StyleGAN2-ADA's heuristic
  0.0002 * resolution^2 / batch);
- `spectral+r1`: both;
- `colour4`, `colour8`: spectral norm, and the discriminator sees colour averaged over 4 x 4 / 8 x 8 pixel blocks
  with brightness in full (`gan_decoder.disc_colour_block`, `vqgan_losses.ColourBlurredInput`), so the GAN term cannot
  ask for fine colour.
Each variant goes to artifacts/bench-gan-decoder/<profile>/<variant> (a finished run made from the current VQ-VAE is
loaded, not retrained). Each is judged on 512 validation faces, with the VQ-VAE's own decoder as
the reference row:

- PSNR, SSIM and sharpness (reconstructions' Laplacian over the originals', `metrics.reconstruction_metrics`);
- colour detail (`metrics.chroma_detail`, the Laplacian of the colour-opponent channels) over the originals', on the
  whole face and on the eye band (pixel rows 48-79, the grid rows 6-9 where the eyes sit): > 1 = more fine colour
  than real faces have, which is what speckle is (and what a sharper true colour edge also gives);
- the Frechet distance from 512 training faces in the features of the judge classifier (in no loss), with its
  half-sampling interval, beside the floor (validation vs training faces).

Writes results.json and crops.png (the eye band of 6 validation faces, 3x: originals, the VQ-VAE's decoder, then one
row per variant) under artifacts/bench-gan-decoder/<profile>/.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from facegen import metrics
from facegen.config import get_profile
from facegen.course import describe_machine
from facegen.data.transforms import from_uint8
from facegen.gan_decoder import gan_decoder_stale_reason, load_gan_decoder, train_gan_decoder
from facegen.pipeline import ensure_classifier, ensure_judge_classifier, ensure_vqvae, load_images
from facegen.tokenize_dataset import vqvae_fingerprint
from facegen.viz import save_image_grid

EYE_ROWS = slice(48, 80)  # grid rows 6-9 of a 16 x 16 token grid at 8 px per token: the eye band (notebook 03)
VARIANTS = ("taming", "spectral", "r1", "spectral+r1", "colour4", "colour8")


def variant_settings(name: str, r1_gamma: float) -> dict:
    plain = {"disc_colour_block": 1}
    return {"taming": {"disc_norm": "batch", "r1_gamma": 0.0, **plain},
            "spectral": {"disc_norm": "spectral", "r1_gamma": 0.0, **plain},
            "r1": {"disc_norm": "batch", "r1_gamma": r1_gamma, **plain},
            "spectral+r1": {"disc_norm": "spectral", "r1_gamma": r1_gamma, **plain},
            "colour4": {"disc_norm": "spectral", "r1_gamma": 0.0, "disc_colour_block": 4},
            "colour8": {"disc_norm": "spectral", "r1_gamma": 0.0, "disc_colour_block": 8}}[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--r1-gamma", type=float, default=None, help="default: 0.0002 * image_size^2 / batch_size")
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/bench-gan-decoder/<profile>")
    args = parser.parse_args()

    base = get_profile(args.profile)
    out = args.out or base.artifacts.parent / "bench-gan-decoder" / base.name
    r1_gamma = args.r1_gamma or 0.0002 * base.data.image_size ** 2 / base.gan_decoder.batch_size
    print(f"{describe_machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; profile {base.name!r}; "
          f"{base.gan_decoder.steps} steps, GAN from step {base.gan_decoder.disc_start}; R1 gamma {r1_gamma:.3g}",
          flush=True)

    vqvae = ensure_vqvae(base, device="cpu")
    fingerprint = vqvae_fingerprint(vqvae)
    judge = ensure_judge_classifier(base, device="cpu")
    val_images = load_images(base, "valid")[:512]
    train_images = load_images(base, "train")
    originals = from_uint8(val_images)
    real_detail = metrics.chroma_detail(originals)
    real_eye_detail = metrics.chroma_detail(originals[:, :, EYE_ROWS])
    train_features = metrics.classifier_outputs(judge, train_images[:512], features=True)
    floor = metrics.frechet_with_interval(metrics.classifier_outputs(judge, val_images, features=True),
                                          train_features)
    print(f"floor (validation vs training faces, judge features): {floor[0]:.1f} [{floor[1][0]:.1f}, "
          f"{floor[1][1]:.1f}]", flush=True)

    models = {"VQ-VAE decoder": (vqvae, None)}
    for name in args.variants:
        folder = out / name
        if gan_decoder_stale_reason(folder, fingerprint) is None:
            print(f"{name}: the finished run in {folder}", flush=True)
            models[name] = (load_gan_decoder(folder), None)
            continue
        profile = base.replace(gan_decoder=variant_settings(name, r1_gamma))
        load_before, started = os.getloadavg()[0], time.perf_counter()
        train_gan_decoder(profile, vqvae=vqvae, train_images=train_images,
                          classifier=ensure_classifier(base, device="cpu"), folder=folder)
        models[name] = (load_gan_decoder(folder), (time.perf_counter() - started, load_before, os.getloadavg()[0]))

    results, crops = {}, [originals[:6, :, EYE_ROWS]]
    for name, (model, timing) in models.items():
        scores = metrics.reconstruction_metrics(model, val_images, model.codebook_size)
        recon = metrics.round_trip(model, val_images)
        fd = metrics.frechet_with_interval(metrics.classifier_outputs(judge, recon, features=True), train_features)
        detail = float(metrics.chroma_detail(recon).mean() / real_detail.mean())
        eye_detail = float(metrics.chroma_detail(recon[:, :, EYE_ROWS]).mean() / real_eye_detail.mean())
        results[name] = {**scores, "chroma_detail": detail, "eye_chroma_detail": eye_detail, "frechet_judge": fd,
                         "training_seconds_load": timing}
        crops.append(recon[:6, :, EYE_ROWS])
        when = (f"; trained in {timing[0] / 60:.1f} min (load {timing[1]:.1f} -> {timing[2]:.1f})" if timing else "")
        print(f"{name:<15} PSNR {scores['psnr']:.2f}  SSIM {scores['ssim']:.3f}  sharpness {scores['sharpness']:.2f}  "
              f"colour detail {detail:.2f} (eyes {eye_detail:.2f})  FD judge {fd[0]:.1f} [{fd[1][0]:.1f}, "
              f"{fd[1][1]:.1f}]{when}", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    grid = F.interpolate(torch.cat(crops), scale_factor=3, mode="nearest")
    png = save_image_grid(grid, out / "crops.png", nrow=6)
    (out / "results.json").write_text(json.dumps({
        "profile": base.name, "machine": describe_machine(), "date": time.strftime("%Y-%m-%d"), "r1_gamma": r1_gamma,
        "floor": floor, "results": results}, indent=1))
    print(f"wrote {png} (rows: originals, {', '.join(models)}) and {out / 'results.json'}")


if __name__ == "__main__":
    main()
