"""`facegen ...`: the course pipeline from the command line (the notebooks call the same functions)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facegen.config import PROFILE_NAMES


def _cmd_info(args: argparse.Namespace) -> int:
    from facegen.config import describe, get_profile

    print(describe(get_profile(args.profile)))
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from facegen.data import synthfaces

    summary = synthfaces.generate(Path(args.out), args.n, seed=args.seed, workers=args.workers)
    print(summary)
    return 0


def _cmd_data_summary(args: argparse.Namespace) -> int:
    from facegen.data.celeba import read_celeba
    from facegen.data.summary import format_rates

    index = read_celeba(Path(args.root))
    print(format_rates(index))
    return 0


def _cmd_course(args: argparse.Namespace) -> int:
    from facegen.config import default_profile_name
    from facegen.course import load_runtimes, run_course, update_runtime_tables

    if args.tables_only:
        update_runtime_tables(load_runtimes())
        return 0
    profile = args.profile or default_profile_name()
    try:
        run_course(profile, only=args.only, out_dir=Path(args.out) if args.out else None, book=not args.no_book)
    except RuntimeError as error:  # a notebook or the book build failed: its own message says which and where
        print(f"facegen: error: {error}", file=sys.stderr)
        return 1
    return 0


def _cmd_book(args: argparse.Namespace) -> int:
    from facegen.course import BOOK_DIR, build_book

    try:
        build_book()
    except RuntimeError as error:
        print(f"facegen: error: {error}", file=sys.stderr)
        return 1
    print(f"book: {BOOK_DIR / '_build' / 'html' / 'index.html'}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from facegen.config import describe, get_profile
    from facegen.data.celeba import read_celeba
    from facegen.data.summary import format_rates
    from facegen.pipeline import ensure_synthfaces, ensure_tokens, ensure_vqvae
    from facegen.vqvae_training import vqvae_folder

    profile = get_profile(args.profile)
    print(describe(profile))
    print("\n== 1. data ==")
    folder = ensure_synthfaces(profile)
    print(format_rates(read_celeba(folder)))
    print("\n== 2. VQ-VAE tokenizer ==")
    ensure_vqvae(profile)
    _print_vqvae_metrics(vqvae_folder(profile))
    print("\n== 3. tokens ==")
    _cmd_tokenize(args)
    return 0


def _print_vqvae_metrics(folder: Path) -> None:
    import json

    history = json.loads((folder / "history.json").read_text())
    last = history["validation"][-1]
    print(f"VQ-VAE in {folder}: {len(history['train'])} steps, {history['seconds'] / 60:.1f} min; validation "
          f"PSNR {last['psnr']:.2f} dB, SSIM {last['ssim']:.3f}, {last['usage']:.0%} of codes used")


def _cmd_train_vqvae(args: argparse.Namespace) -> int:
    from facegen.config import describe, get_profile
    from facegen.vqvae_training import train_vqvae

    profile = get_profile(args.profile)
    print(describe(profile))
    run = train_vqvae(profile, steps=args.steps, resume=not args.restart)
    if run.validation:
        _print_vqvae_metrics(run.folder)
    return 0


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from facegen.config import get_profile
    from facegen.pipeline import ensure_tokens
    from facegen.tokenize_dataset import read_token_info, tokens_folder

    profile = get_profile(args.profile)
    splits = ensure_tokens(profile)
    info = read_token_info(tokens_folder(profile))
    sizes = ", ".join(f"{name} {len(split):,}" for name, split in splits.items())
    print(f"tokens in {tokens_folder(profile)}: {sizes} faces; encoded at {info.images_per_second:,.0f} img/s")
    return 0


def _cmd_train_gpt(args: argparse.Namespace) -> int:
    from facegen.config import describe, get_profile
    from facegen.gpt import METADATA_FILE, MODEL_DIR, describe_gpt, train_gpt

    from accelerate import PartialState

    profile = get_profile(args.profile)
    if PartialState().is_main_process:  # under `accelerate launch`, one process speaks
        print(describe(profile))
    run = train_gpt(profile, steps=args.steps, resume=not args.restart)
    if run.is_main_process:
        saved = run.folder / MODEL_DIR / METADATA_FILE
        if saved.is_file():
            print(f"{describe_gpt(json.loads(saved.read_text()))}; saved in {saved.parent}")
    return 0


def _cmd_train_gan_decoder(args: argparse.Namespace) -> int:
    from facegen.config import describe, get_profile
    from facegen.gan_decoder import train_gan_decoder

    profile = get_profile(args.profile)
    print(describe(profile))
    run = train_gan_decoder(profile, steps=args.steps, resume=not args.restart)
    if run.validation:
        last = run.validation[-1]
        print(f"GAN-tuned decoder in {run.folder}: {len(run.history)} steps, {run.seconds / 60:.1f} min; validation "
              f"PSNR {last['psnr']:.2f} dB, SSIM {last['ssim']:.3f}, sharpness {last['sharpness']:.2f}; "
              f"perceptual loss: {run.perceptual}")
    return 0


def _cmd_train_vqgan(args: argparse.Namespace) -> int:
    from facegen.config import describe, get_profile
    from facegen.vqgan_training import train_vqgan

    profile = get_profile(args.profile)
    print(describe(profile))
    run = train_vqgan(profile, steps=args.steps, resume=not args.restart)
    if run.validation:
        last = run.validation[-1]
        print(f"small VQGAN in {run.folder}: {len(run.history)} steps, {run.seconds / 60:.1f} min; validation "
              f"PSNR {last['psnr']:.2f} dB, SSIM {last['ssim']:.3f}, {last['usage']:.0%} of codes used; "
              f"perceptual loss: {run.perceptual}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import math
    import time

    from facegen.config import get_profile
    from facegen.pipeline import ensure_gpt, ensure_vqvae
    from facegen.sampling import parse_attributes, sample_faces
    from facegen.viz import save_image_grid

    attributes = parse_attributes(args.attr)  # bad --attr fails here, before anything is loaded or trained
    profile = get_profile(args.profile)
    gpt = ensure_gpt(profile)
    vqvae = ensure_vqvae(profile)
    began = time.perf_counter()
    faces = sample_faces(gpt.model, gpt.vocab, vqvae, args.n, attributes, guidance_scale=args.guidance,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                         progress=True)
    seconds = time.perf_counter() - began
    out = save_image_grid(faces, Path(args.out), nrow=math.ceil(math.sqrt(args.n)))
    asked = ", ".join(f"{name}={value}" for name, value in attributes.items()) or "nothing (unconditional)"
    print(f"{args.n} faces asked for {asked} (guidance {args.guidance:g}, seed {args.seed}) in {seconds:.1f} s "
          f"-> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegen", description=__doc__)
    # --profile is accepted after every command (`facegen train-vqvae --profile ci`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                        help="profile to use (default: FACEGEN_PROFILE, else gpu with CUDA, else cpu)")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("info", parents=[common], help="print the active profile and device").set_defaults(func=_cmd_info)
    course = commands.add_parser("course", parents=[common], help="the whole course: SynthFaces, every notebook "
                                 "executed in order (runtimes -> docs/runtimes.json), then the book")
    course.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (numbers or names)")
    course.add_argument("--out", default=None, help="folder for the executed notebooks (default: in place for the "
                        "cpu profile, else artifacts/<profile>/notebooks)")
    course.add_argument("--no-book", action="store_true", help="do not build the book at the end")
    course.add_argument("--tables-only", action="store_true",
                        help="only re-render the runtime tables of README.md and book/intro.md from docs/runtimes.json")
    course.set_defaults(func=_cmd_course)
    commands.add_parser("prepare", parents=[common], help="data -> VQ-VAE -> token shards, without the notebooks"
                        ).set_defaults(func=_cmd_prepare)
    commands.add_parser("book", help="build the Jupyter Book into book/_build/html").set_defaults(func=_cmd_book)

    train = commands.add_parser("train-vqvae", parents=[common], help="train (or resume) the profile's VQ-VAE")
    train.add_argument("--steps", type=int, default=None, help="override the profile's step count")
    train.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    train.set_defaults(func=_cmd_train_vqvae)

    train_vqgan = commands.add_parser("train-vqgan", parents=[common],
                                      help="train (or resume) the profile's small VQGAN (notebook 07)")
    train_vqgan.add_argument("--steps", type=int, default=None, help="override the profile's step count")
    train_vqgan.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    train_vqgan.set_defaults(func=_cmd_train_vqgan)

    tune = commands.add_parser("train-gan-decoder", parents=[common],
                               help="fine-tune (or resume) the VQ-VAE's decoder with the VQGAN losses (notebook 07)")
    tune.add_argument("--steps", type=int, default=None, help="override the profile's step count")
    tune.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    tune.set_defaults(func=_cmd_train_gan_decoder)

    train_gpt = commands.add_parser("train-gpt", parents=[common], help="train (or resume) the profile's GPT; "
                                    "multi-GPU: `accelerate launch -m facegen.cli train-gpt`")
    train_gpt.add_argument("--steps", type=int, default=None, help="override the profile's step count")
    train_gpt.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    train_gpt.set_defaults(func=_cmd_train_gpt)

    sample = commands.add_parser("sample", parents=[common], help="sample faces from the profile's GPT into a PNG grid")
    sample.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                        help="condition on an attribute, VALUE 0, 1 or ? (repeatable; the others are ?)")
    sample.add_argument("--n", type=int, default=16, help="number of faces (default 16)")
    sample.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    sample.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1)")
    sample.add_argument("--top-k", type=int, default=None, help="sample among the k most likely codes")
    sample.add_argument("--top-p", type=float, default=None, help="sample among the codes holding probability p")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", required=True, help="PNG file to write (atomically)")
    sample.set_defaults(func=_cmd_sample)

    commands.add_parser("tokenize", parents=[common], help="encode the dataset into VQ-VAE tokens (once)"
                        ).set_defaults(func=_cmd_tokenize)

    data = commands.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="render SynthFaces in the CelebA folder layout")
    synth.add_argument("--n", type=int, required=True, help="number of images")
    synth.add_argument("--out", required=True, help="output folder (CelebA layout)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.set_defaults(func=_cmd_data_synth)
    summary = data.add_parser("summary", help="counts and attribute rates of a CelebA-layout folder")
    summary.add_argument("root", help="folder with img_align_celeba/ and the two list files")
    summary.set_defaults(func=_cmd_data_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as error:  # bad input: one clear line, no traceback
        print(f"facegen: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
