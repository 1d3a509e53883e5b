"""The profile's VQ-VAE beside variants of its bottleneck and loss, each trained for the same steps on the same data.

    python benchmarks/bench_tokenizers.py [--profile cpu] [--variants vq fsq perceptual l2 long wide deep ...]
        [--steps N] [--levels 8 8 8] [--l2-dim 8] [--perceptual-weight 0.1] [--budget 1.8] [--seed N] [--out DIR]
        [--restart]

Variants (the first one named is the baseline of the paired comparisons):
- `vq`: the profile's VQ-VAE (`vqvae.quantizer = "vq"`), trained with `train_vqvae`;
- `fsq`: the same encoder/decoder with finite scalar quantization at `--levels` (8 8 8 = 512 codes);
- `perceptual` (issue 16): the profile's VQ-VAE trained with `train_vqvae_perceptual`, loss = MSE + VQ +
  `--perceptual-weight` x the feature distance of the profile's attribute classifier (LPIPS where it is installed
  with its weights);
- `l2` (issue 16): `vqvae.quantizer = "l2"`, codes of `--l2-dim` numbers, l2-normalised with the codebook (ViT-VQGAN);
- where a bigger time budget goes (issue 16), each about `--budget` times the profile's training time (ratios measured
  with benchmarks/bench_vqvae.py --sizes): `long`, the profile's model trained for `--budget` x the steps; `wide`,
  hidden 96 instead of 64 (1.8x the step time); `deep`, 8 residual blocks instead of 2 at 16 x 16 (1.6x);
- the loss and the learning rate at `long`'s steps (issue 16): `l1`, loss = L1 + VQ instead of MSE + VQ; `mix`,
  0.16 x L1 + 0.84 x (1 - SSIM) + VQ (Zhao et al. 2017's mix, with single-scale SSIM); `blend`, MSE + 0.03 x
  (1 - SSIM) + VQ (`structural_step`); `hot`, the profile's loss at 1.5x its learning rate;
- a larger codebook at `long`'s steps (issue 16): `codes1024` and `codes2048`, `vqvae.codebook_size` 1,024 and 2,048
  instead of 512 (1.01x and 1.26x the step time, bench_vqvae.py --codebooks);
- an edge term at `long`'s steps (issue 16): `edges`, MSE + 0.1 x `image_gradient_l1` + VQ (`structural_step`).
`long` and the last seven train for `--budget` x the steps, the others for the profile's `vqvae.steps` (or `--steps`),
each into its own folder under artifacts/bench-tokenizers/<profile>/ (<profile>-seed<N>/ with `--seed N`; never the
profile's own artifacts; a finished run there is loaded as it is unless `--restart`). Then, on every validation face,
through the tokens (`encode_indices` -> `decode_indices`):

- PSNR, SSIM, sharpness, codebook usage and perplexity (`facegen.metrics.reconstruction_metrics`), and the PSNR and
  SSIM differences face by face against the baseline (mean with a 95% interval, share of faces where it is better);
- the per-attribute reconstruction ceiling: the share of faces where the JUDGE classifier
  (`ensure_judge_classifier`, trained from another seed, never in any loss) gives the same answer on the
  reconstruction as on the original, per conditioning attribute, with a 95% Wilson interval and the paired
  comparison with the baseline on the same faces (faces only one of them keeps, exact McNemar p-value); the mean
  by the profile's own classifier (`ensure_classifier`, the perceptual variant's loss) is printed beside it;
- the training wall time (the engine's, validations included) and the machine's load before and after (a run that
  was loaded, not trained, has no load figures).

Writes results.json and faces.png (8 validation faces: originals, then one row per variant in `--variants` order).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from facegen import metrics
from facegen.attributes import attribute_index
from facegen.config import get_profile
from facegen.course import describe_machine
from facegen.data.transforms import from_uint8
from facegen.pipeline import ensure_classifier, ensure_judge_classifier, load_images
from facegen.viz import save_image_grid
from facegen.vqvae import VQVAE
from facegen.vqvae_training import MODEL_DIR, load_vqvae, train_vqvae, train_vqvae_perceptual

VARIANTS = ("vq", "fsq", "perceptual", "l2", "long", "wide", "deep", "l1", "mix", "hot", "blend", "codes1024",
            "codes2048", "edges")
FOCUS = ("Smiling", "Mouth_Slightly_Open")  # what the tokens blur and the GPT learns last (benchmarks/README.md)


def image_gradient_l1(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the horizontal plus that of the vertical neighbour differences of two image batches:
    the gradient difference loss of Mathieu et al. 2016 ("Deep multi-scale video prediction beyond mean square
    error"), alpha = 1. It charges a thin line (an earring's hoop) by its edges, which MSE barely sees."""
    def dx(t):
        return t[..., :, 1:] - t[..., :, :-1]

    def dy(t):
        return t[..., 1:, :] - t[..., :-1, :]

    return (dx(recon) - dx(target)).abs().mean() + (dy(recon) - dy(target)).abs().mean()


def structural_step(model, x, mse_weight: float, l1_weight: float, ssim_weight: float,
                    gradient_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """loss = mse_weight * MSE + l1_weight * L1 + ssim_weight * (1 - SSIM) + gradient_weight * `image_gradient_l1` +
    VQ loss, the pixel terms in fp32 (the `l1`, `mix`, `blend` and `edges` variants; Zhao et al. 2017, "Loss
    functions for image restoration with neural networks")."""
    recon, vq = model(x)
    recon, target = recon.float(), x.float()
    terms = {"recon": F.mse_loss(recon, target), "l1": (recon - target).abs().mean()}
    if ssim_weight:  # SSIM costs ~14% of a step: computed only where it is in the loss
        terms["dssim"] = 1 - metrics.ssim(recon, target)
    if gradient_weight:
        terms["edges"] = image_gradient_l1(recon, target)
    loss = (mse_weight * terms["recon"] + l1_weight * terms["l1"] + ssim_weight * terms.get("dssim", 0.0)
            + gradient_weight * terms.get("edges", 0.0) + vq.loss)
    return {"loss": loss, **terms, "vq": vq.loss, "perplexity": vq.perplexity}


STEPS = {"l1": partial(structural_step, mse_weight=0.0, l1_weight=1.0, ssim_weight=0.0),
         "mix": partial(structural_step, mse_weight=0.0, l1_weight=0.16, ssim_weight=0.84),
         "blend": partial(structural_step, mse_weight=1.0, l1_weight=0.0, ssim_weight=0.03),
         "edges": partial(structural_step, mse_weight=1.0, l1_weight=0.0, ssim_weight=0.0, gradient_weight=0.1)}


def trained(profile, train_images, val_images, folder: Path, steps: int, restart: bool, trainer=train_vqvae):
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
    run = trainer(profile, train_images, val_images, folder=folder, steps=steps, resume=not restart)
    return run.model, run.seconds, (load_before, os.getloadavg()[0])


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
    parser.add_argument("--l2-dim", type=int, default=8, help="code size of the l2-normalised VQ")
    parser.add_argument("--perceptual-weight", type=float, default=0.1, help="weight of the perceptual term")
    parser.add_argument("--budget", type=float, default=1.8, help="the long variant's steps, times --steps")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="tokenizers to train/load and compare; the first is the baseline of the paired tests")
    parser.add_argument("--seed", type=int, default=None, help="the VQ-VAEs' seed (default: the profile's vqvae.seed)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: artifacts/bench-tokenizers/<profile>, or <profile>-seed<N> with --seed N")
    parser.add_argument("--restart", action="store_true", help="train again even where a finished run is found")
    args = parser.parse_args()

    base = get_profile(args.profile)
    folder_name = base.name
    if args.seed is not None and args.seed != base.vqvae.seed:  # another seed: every variant trains from it
        base, folder_name = base.replace(vqvae={"seed": args.seed}), f"{base.name}-seed{args.seed}"
    steps = args.steps or base.vqvae.steps
    out = args.out or base.artifacts.parent / "bench-tokenizers" / folder_name  # next to artifacts/<profile>
    levels = tuple(args.levels)
    profiles = {
        "vq": base,
        "fsq": base.replace(vqvae={"quantizer": "fsq", "fsq_levels": levels, "codebook_size": math.prod(levels)}),
        "perceptual": base,
        "l2": base.replace(vqvae={"quantizer": "l2", "l2_dim": args.l2_dim}),
        "long": base,
        "wide": base.replace(vqvae={"hidden": 96}),
        "deep": base.replace(vqvae={"n_res_blocks": 8}),
        "l1": base,
        "mix": base,
        "hot": base.replace(vqvae={"lr": 1.5 * base.vqvae.lr}),
        "blend": base,
        "codes1024": base.replace(vqvae={"codebook_size": 1024}),
        "codes2048": base.replace(vqvae={"codebook_size": 2048}),
        "edges": base,
    }
    at_budget = ("long", "l1", "mix", "hot", "blend", "codes1024", "codes2048", "edges")
    steps_of = {name: steps for name in VARIANTS} | {name: round(args.budget * steps) for name in at_budget}
    print(f"{describe_machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"profile {base.name!r}, seed {base.vqvae.seed}, {steps} steps x {base.vqvae.batch_size} images each; "
          f"FSQ levels {levels}; l2 codes of {args.l2_dim}; perceptual weight {args.perceptual_weight}", flush=True)

    train_images = load_images(base, "train")
    val_images, val_attributes = load_images(base, "valid", attributes=True)
    # Two classifiers: the profile's (`ensure_classifier`), whose features are the perceptual variant's loss, and
    # the judge (`ensure_judge_classifier`, the same recipe from another seed), which never enters a loss. The
    # ceiling that counts is the judge's; the first one's is printed beside it to show what optimising it does.
    judges = {"judge": ensure_judge_classifier(base, device="cpu"), "loss classifier": ensure_classifier(base, device="cpu")}
    names = judges["judge"].attributes
    columns = [attribute_index(name) for name in names]
    labels = val_attributes[:, columns] == 1
    original = {}
    for who, classifier in judges.items():
        assert classifier.attributes == names
        original[who] = metrics.classifier_outputs(classifier, val_images) > 0
        print(f"{len(val_images)} validation faces; {who} right on the originals for "
              f"{(original[who] == labels).float().mean():.1%} of (face, attribute) pairs", flush=True)

    results, recons, agree = {}, {}, {}
    for name in args.variants:
        profile = profiles[name]
        trainer = (partial(train_vqvae_perceptual, weight=args.perceptual_weight) if name == "perceptual"
                   else partial(train_vqvae, batch_loss=STEPS[name], settings={"loss": name}) if name in STEPS
                   else train_vqvae)
        model, seconds, load = trained(profile, train_images, val_images, out / name, steps_of[name], args.restart,
                                       trainer)
        model = model.to("cpu").eval()
        images_per_second = steps_of[name] * profile.vqvae.batch_size / seconds
        scores = metrics.reconstruction_metrics(model, val_images, model.codebook_size)
        recon = metrics.round_trip(model, val_images)
        recons[name] = recon
        results[name] = {**scores, "steps": steps_of[name], "seconds": seconds, "images_per_second": images_per_second,
                         "load_before_after": load, "codebook_size": model.codebook_size,
                         "params": sum(p.numel() for p in model.parameters())}
        for who, classifier in judges.items():
            ceiling = metrics.attribute_agreement(classifier, val_images, recon)
            agree[name, who] = ceiling["agree"]
            key = "agreement" if who == "judge" else "agreement_loss_classifier"
            results[name][key], results[name][key + "_interval"] = ceiling["share"], ceiling["interval"]
        where = f"load {load[0]:.1f} -> {load[1]:.1f}" if load else f"the finished run in {out / name}"
        print(f"{name}: {results[name]['params']:,} params, {seconds / 60:.1f} min ({images_per_second:.1f} img/s, "
              f"{where}); PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.3f}, sharpness "
              f"{scores['sharpness']:.2f}, codes used {scores['usage']:.1%} of {model.codebook_size}, perplexity "
              f"{scores['perplexity']:.1f}", flush=True)

    first = args.variants[0]
    print(f"\nper-attribute ceiling by the JUDGE classifier (never in a loss): same answer on the reconstruction as "
          f"on the original; [95% interval]; (faces kept only by {first} / only by this one, exact McNemar p)")
    print(f"{'attribute':<22} {'positive':>8} " + " ".join(f"{name:>36}" for name in args.variants))
    for j, attr in enumerate(names):
        cells = []
        for name in args.variants:
            r = results[name]
            lo, hi = r["agreement_interval"][attr]
            cell = f"{r['agreement'][attr]:.1%} [{lo:.1%}, {hi:.1%}]"
            if name != first:
                only_first = int((agree[first, "judge"][:, j] & ~agree[name, "judge"][:, j]).sum())
                only_this = int((agree[name, "judge"][:, j] & ~agree[first, "judge"][:, j]).sum())
                r.setdefault("paired_attributes", {})[attr] = {"only_" + first: only_first, "only_this": only_this,
                                                               "p": mcnemar_p(only_first, only_this)}
                cell += f" ({only_first}/{only_this} p {mcnemar_p(only_first, only_this):.2f})"
            cells.append(f"{cell:>36}")
        mark = " <-" if attr in FOCUS else ""
        print(f"{attr:<22} {labels[:, j].float().mean():>8.1%} " + " ".join(cells) + mark)
    for key, title in (("agreement", "mean, judge"), ("agreement_loss_classifier", "mean, loss classifier"),):
        means = {name: sum(results[name][key].values()) / len(names) for name in args.variants}
        mins = {name: min(results[name][key].values()) for name in args.variants}
        print(f"{title:<22} {'':>8} " + " ".join(f"{f'{means[n]:.1%} (lowest {mins[n]:.1%})':>36}"
                                                  for n in args.variants))
        for name in args.variants:
            results[name][key + "_mean"], results[name][key + "_lowest"] = means[name], mins[name]

    # Paired over the same faces: is the PSNR / SSIM gap larger than the face-to-face spread says it could be by chance?
    x = from_uint8(val_images)
    paired = {}
    for metric in ("psnr", "ssim"):
        per_face = {name: getattr(metrics, metric)(recons[name], x, reduction="none").double() for name in recons}
        for name in args.variants[1:]:
            diff = per_face[name] - per_face[first]
            half = 1.96 * float(diff.std()) / math.sqrt(len(diff))
            paired.setdefault(name, {})[metric] = {
                f"minus_{first}": float(diff.mean()), "interval": (float(diff.mean()) - half, float(diff.mean()) + half),
                "better_share": float((diff > 0).double().mean())}
            print(f"{metric.upper()} {name} - {first} per face: {diff.mean():+.3f} (95% interval "
                  f"{diff.mean() - half:+.3f} to {diff.mean() + half:+.3f}); {name} better on "
                  f"{(diff > 0).double().mean():.0%} of the faces")

    grid = torch.cat([from_uint8(val_images[:8])] + [recons[name][:8] for name in args.variants])
    png = save_image_grid(grid, out / "faces.png", nrow=8)
    (out / "results.json").write_text(json.dumps({"profile": base.name, "seed": base.vqvae.seed, "steps": steps,
                                                  "levels": levels, "l2_dim": args.l2_dim,
                                                  "perceptual_weight": args.perceptual_weight,
                                                  "validation_faces": len(val_images), "results": results,
                                                  "paired": paired,
                                                  "date": time.strftime("%Y-%m-%d")}, indent=1))
    print(f"\nwrote {png} (rows: originals, {', '.join(args.variants)}) and {out / 'results.json'}")


if __name__ == "__main__":
    main()
