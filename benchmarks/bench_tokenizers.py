"""The profile's VQ-VAE and the same encoder/decoder with finite scalar quantization (FSQ), trained for the same steps.

    python benchmarks/bench_tokenizers.py [--profile cpu] [--steps N] [--levels 8 8 8] [--out DIR] [--restart]

Trains, on the profile's data, the profile's VQ-VAE (`vqvae.quantizer = "vq"`) and the same model with
`vqvae.quantizer = "fsq"` and `--levels` (default 8 8 8 = 512 codes, the codebook size), each with `train_vqvae`
for the profile's `vqvae.steps` (or `--steps`) into its own folder under artifacts/bench-tokenizers/<profile>/
(never the profile's own artifacts; a finished run there is loaded as it is unless `--restart`). Then, on every
validation face, through the tokens (`encode_indices` -> `decode_indices`):

- PSNR, SSIM, sharpness, codebook usage and perplexity (`facegen.metrics.reconstruction_metrics`), and the PSNR and
  SSIM differences face by face (FSQ - VQ, mean with a 95% interval, share of faces where FSQ is better);
- the per-attribute reconstruction ceiling: the share of faces where the profile's attribute classifier
  (`ensure_classifier`) gives the same answer on the reconstruction as on the original, per conditioning attribute,
  with a 95% Wilson interval, and the paired comparison of the two tokenizers on the same faces (faces only one of
  them keeps, exact McNemar p-value);
- the training wall time (the engine's, validations included) and the machine's load before and after (a run that
  was loaded, not trained, has no load figures).

Writes results.json and faces.png (8 validation faces: originals, VQ reconstructions, FSQ reconstructions) there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from facegen import metrics
from facegen.attributes import attribute_index
from facegen.config import get_profile
from facegen.data.transforms import from_uint8
from facegen.pipeline import ensure_classifier, load_images
from facegen.viz import save_image_grid
from facegen.vqvae import VQVAE
from facegen.vqvae_training import MODEL_DIR, load_vqvae, train_vqvae

FOCUS = ("Smiling", "Mouth_Slightly_Open")  # what the tokens blur and the GPT learns last (benchmarks/README.md)


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Images through the tokens, uint8 in and float in [-1, 1] out (on the CPU)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = from_uint8(images[start:start + batch_size]).contiguous(memory_format=torch.channels_last)
        out.append(model.decode_indices(model.encode_indices(x)).float().cpu())
    return torch.cat(out)


def trained(profile, train_images, val_images, folder: Path, steps: int, restart: bool):
    """(model, training seconds, (load before, load after) or None) of the run in `folder`: a finished run there is
    loaded as it is (`train_vqvae` would resume it and rewrite its speed record), anything else trained."""
    if not restart and (folder / MODEL_DIR / "model.safetensors").is_file():
        history = json.loads((folder / "history.json").read_text())
        if len(history["train"]) != steps:
            raise SystemExit(f"{folder} holds a run of {len(history['train'])} steps, not {steps}: pass --restart "
                             f"to train it again")
        model, fresh = load_vqvae(folder), VQVAE.from_profile(profile).state_dict()
        saved = model.state_dict()
        if saved.keys() != fresh.keys() or any(saved[k].shape != fresh[k].shape for k in fresh) or (
                "quantizer.levels" in fresh and not torch.equal(saved["quantizer.levels"], fresh["quantizer.levels"])):
            raise SystemExit(f"{folder} holds another model than {profile.vqvae}: pass --restart to train it again")
        return model, history["seconds"], None
    load_before = os.getloadavg()[0]
    run = train_vqvae(profile, train_images, val_images, folder=folder, steps=steps, resume=not restart)
    return run.model, run.seconds, (load_before, os.getloadavg()[0])


def cpu_name() -> str:
    """The CPU's model name, as `lscpu` gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: of the faces where exactly one tokenizer keeps the classifier's answer, is the
    split further from 50/50 than chance?"""
    from scipy.stats import binomtest

    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_a, n).pvalue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps of each (default: vqvae.steps)")
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 8, 8], help="FSQ levels per channel")
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/bench-tokenizers/<profile>")
    parser.add_argument("--restart", action="store_true", help="train again even where a finished run is found")
    args = parser.parse_args()

    base = get_profile(args.profile)
    steps = args.steps or base.vqvae.steps
    out = args.out or base.artifacts.parent / "bench-tokenizers" / base.name  # next to artifacts/<profile>
    levels = tuple(args.levels)
    variants = {
        "vq": base,
        "fsq": base.replace(vqvae={"quantizer": "fsq", "fsq_levels": levels, "codebook_size": math.prod(levels)}),
    }
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"profile {base.name!r}, {steps} steps x {base.vqvae.batch_size} images each; FSQ levels {levels}",
          flush=True)

    train_images = load_images(base, "train")
    val_images, val_attributes = load_images(base, "valid", attributes=True)
    classifier = ensure_classifier(base, device="cpu")
    original = metrics.classifier_outputs(classifier, val_images) > 0
    names = classifier.attributes
    columns = [attribute_index(name) for name in names]
    labels = val_attributes[:, columns] == 1
    print(f"{len(val_images)} validation faces; classifier right on the originals for "
          f"{(original == labels).float().mean():.1%} of (face, attribute) pairs", flush=True)

    results, recons = {}, {}
    for name, profile in variants.items():
        model, seconds, load = trained(profile, train_images, val_images, out / name, steps, args.restart)
        model = model.to("cpu").eval()
        images_per_second = steps * profile.vqvae.batch_size / seconds
        scores = metrics.reconstruction_metrics(model, val_images, model.codebook_size)
        recon = reconstruct(model, val_images)
        recons[name] = recon
        same = metrics.classifier_outputs(classifier, recon) > 0
        agree = same == original
        results[name] = {
            **scores, "seconds": seconds, "images_per_second": images_per_second, "load_before_after": load,
            "codebook_size": model.codebook_size,
            "agreement": {attr: float(agree[:, j].float().mean()) for j, attr in enumerate(names)},
            "agreement_interval": {attr: metrics.proportion_interval(int(agree[:, j].sum()), len(agree))
                                   for j, attr in enumerate(names)},
            "label_accuracy": {attr: float((same[:, j] == labels[:, j]).float().mean())
                               for j, attr in enumerate(names)},
            "agree_matrix": agree,
        }
        where = f"load {load[0]:.1f} -> {load[1]:.1f}" if load else f"the finished run in {out / name}"
        print(f"{name}: {seconds / 60:.1f} min ({images_per_second:.1f} img/s, {where}); "
              f"PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.3f}, sharpness "
              f"{scores['sharpness']:.2f}, codes used {scores['usage']:.1%} of {model.codebook_size}, perplexity "
              f"{scores['perplexity']:.1f}", flush=True)

    vq, fsq = results["vq"], results["fsq"]
    print("\nper-attribute ceiling: classifier gives the same answer on the reconstruction as on the original")
    print(f"{'attribute':<22} {'positive':>8} {'VQ':>22} {'FSQ':>22} {'only VQ / only FSQ':>19} {'McNemar p':>9}")
    for j, attr in enumerate(names):
        only_vq = int((vq["agree_matrix"][:, j] & ~fsq["agree_matrix"][:, j]).sum())
        only_fsq = int((fsq["agree_matrix"][:, j] & ~vq["agree_matrix"][:, j]).sum())
        cells = [f"{r['agreement'][attr]:.1%} [{r['agreement_interval'][attr][0]:.1%}, "
                 f"{r['agreement_interval'][attr][1]:.1%}]" for r in (vq, fsq)]
        mark = " <-" if attr in FOCUS else ""
        print(f"{attr:<22} {labels[:, j].float().mean():>8.1%} {cells[0]:>22} {cells[1]:>22} "
              f"{f'{only_vq} / {only_fsq}':>19} {mcnemar_p(only_vq, only_fsq):>9.3f}{mark}")
        for r, only in ((vq, only_vq), (fsq, only_fsq)):
            r.setdefault("only_this", {})[attr] = only
    mean = {name: sum(r["agreement"].values()) / len(names) for name, r in results.items()}
    print(f"{'mean over attributes':<22} {'':>8} {mean['vq']:>22.1%} {mean['fsq']:>22.1%}")

    # Paired over the same faces: is the PSNR / SSIM gap larger than the face-to-face spread says it could be by chance?
    x = from_uint8(val_images)
    paired = {}
    for metric in ("psnr", "ssim"):
        per_face = {name: getattr(metrics, metric)(recons[name], x, reduction="none").double() for name in recons}
        diff = per_face["fsq"] - per_face["vq"]
        half = 1.96 * float(diff.std()) / math.sqrt(len(diff))
        paired[metric] = {"fsq_minus_vq": float(diff.mean()), "interval": (float(diff.mean()) - half,
                                                                           float(diff.mean()) + half),
                          "fsq_better_share": float((diff > 0).double().mean())}
        print(f"{metric.upper()} FSQ - VQ per face: {diff.mean():+.3f} (95% interval {diff.mean() - half:+.3f} to "
              f"{diff.mean() + half:+.3f}); FSQ better on {(diff > 0).double().mean():.0%} of the faces")

    grid = torch.cat([from_uint8(val_images[:8]), recons["vq"][:8], recons["fsq"][:8]])
    png = save_image_grid(grid, out / "faces.png", nrow=8)
    for r in results.values():
        del r["agree_matrix"]
    (out / "results.json").write_text(json.dumps({"profile": base.name, "steps": steps, "levels": levels,
                                                  "validation_faces": len(val_images), "results": results,
                                                  "paired": paired,
                                                  "date": time.strftime("%Y-%m-%d")}, indent=1))
    print(f"\nwrote {png} (rows: originals, VQ, FSQ) and {out / 'results.json'}")


if __name__ == "__main__":
    main()
