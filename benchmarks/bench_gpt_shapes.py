"""How wide a GPT for the notebook's training budget: validation loss against training time for GPT shapes.

    python benchmarks/bench_gpt_shapes.py [--profile cpu] [--shapes 192/6x1600 128/4x3200 96/4x4000]
        [--layers N] [--lr LR] [--ema-decay D]

Each shape WIDTH/HEADSxSTEPS is the profile's GPT (its depth, batch, learning rate, schedule, seed and tokens) with
`n_embd` WIDTH, `n_head` HEADS, trained for STEPS optimizer steps by `train_gpt` on the profile's saved tokens,
into artifacts/bench-gpt-shapes/<profile>/<shape> (a finished run there is loaded, not retrained). Prints, per
shape: parameters, training FLOP per token, the run's seconds and tokens/s, and its validation loss at every
validation (nats per image token and bits per image, the tokens of notebook 05's validation split), and the last
step's own weights beside the saved moving average. `--layers`, `--lr` and `--ema-decay` change the depth, the peak
learning rate and the weight average of every shape in the run (their folders say so).

The question is the one a fixed budget asks: at the same minutes, does a wider model that takes fewer steps or a
narrower one that takes more learn more? Run one shape at a time on a quiet machine: seconds are the comparison.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from facegen.config import get_profile
from facegen.course import describe_machine
from facegen.gpt import MODEL_DIR, count_parameters, gpt_config, train_gpt, training_flops_per_token
from facegen.tokens import Vocabulary


def parse_shape(text: str) -> dict:
    """'128/4x3200' -> {"n_embd": 128, "n_head": 4, "steps": 3200}."""
    try:
        width_heads, steps = text.split("x")
        width, heads = width_heads.split("/")
        shape = {"n_embd": int(width), "n_head": int(heads), "steps": int(steps)}
    except ValueError:
        raise SystemExit(f"--shapes: expected WIDTH/HEADSxSTEPS such as 128/4x3200, got {text!r}") from None
    if shape["n_embd"] % shape["n_head"]:
        raise SystemExit(f"--shapes {text}: the width {shape['n_embd']} must be a multiple of the heads "
                         f"{shape['n_head']}")
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--shapes", nargs="+", default=["192/6x1600", "128/4x3200", "96/4x4000"])
    parser.add_argument("--layers", type=int, default=None, help="default: the profile's n_layer")
    parser.add_argument("--lr", type=float, default=None, help="default: the profile's lr")
    parser.add_argument("--ema-decay", type=float, default=None, help="default: the profile's ema_decay")
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/bench-gpt-shapes/<profile>")
    args = parser.parse_args()

    base = get_profile(args.profile)
    out = args.out or base.artifacts.parent / "bench-gpt-shapes" / base.name
    print(f"{describe_machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; profile {base.name!r}: "
          f"{base.gpt.n_layer} layers, batch {base.gpt.batch_size}, lr {base.gpt.lr:g}", flush=True)
    vocab = Vocabulary.for_profile(base)
    for text in args.shapes:
        extra = {"n_layer": args.layers} if args.layers else {}
        extra |= {"lr": args.lr} if args.lr else {}
        extra |= {"ema_decay": args.ema_decay} if args.ema_decay is not None else {}
        profile = base.replace(gpt=parse_shape(text) | extra)
        config = gpt_config(profile, vocab)
        folder = out / (text.replace("/", "h") + "".join(f"-{key}{value:g}" for key, value in extra.items()))
        finished = (folder / MODEL_DIR).exists()  # then train_gpt resumes its last checkpoint: nothing to run
        run = train_gpt(profile, folder=folder, progress=False)
        params = count_parameters(config)["total"]
        # over the whole run's recorded seconds: GPTRun.tokens_per_second counts only this call's steps (0 when loaded)
        tokens_per_second = run.steps * profile.gpt.batch_size * vocab.length / run.seconds
        print(f"\n{folder.name}: {params:,} parameters, {training_flops_per_token(config) / 1e6:.1f} MFLOP/token, "
              f"{run.steps:,} steps in {run.seconds / 60:.1f} min ({'loaded' if finished else 'trained now'}), "
              f"{tokens_per_second:,.0f} tokens/s", flush=True)
        for row in run.validation:
            print(f"  step {row['step']:>5,}: validation {row['val_loss']:.3f} nats/token "
                  f"= {256 * row['val_loss'] / math.log(2):,.0f} bits/image")
        if "last_step_val_loss" in run.validation[-1]:  # runs since the GPT saves its weights' moving average
            print(f"  (the saved weights are the moving average, ema_decay {profile.gpt.ema_decay:g}; the last step's "
                  f"own weights: {run.validation[-1]['last_step_val_loss']:.3f} nats/token)")


if __name__ == "__main__":
    main()
