"""`facegen ...`: the course pipeline from the command line (the notebooks call the same functions)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from facegen.config import PROFILE_NAMES

MAX_SAMPLES = 1024  # faces per `facegen sample`: generation holds all of them (and their KV cache) in memory at once


def _int_at_least(low: int, what: str = "an integer"):
    """An argparse type: an integer >= low, else argparse's own one-line error naming the option."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what} >= {low}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1)


def _sample_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SAMPLES} faces per run (they are generated in one "
                                         f"batch, held in memory together), got {value}; run it several times with "
                                         "different --seed")
    return value


@contextlib.contextmanager
def _writing(folder: Path, what: str):
    """Hold the artifact folder's lock while a training command writes it (one process speaks for `accelerate
    launch`: the other ranks do not save)."""
    from facegen.checkpoint import artifact_lock

    if os.environ.get("RANK", "0") != "0" or os.environ.get("LOCAL_RANK", "0") != "0":
        yield
        return
    with artifact_lock(folder, what):
        yield


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
    from facegen.data.summary import find_bad_images, format_rates

    index = read_celeba(Path(args.root))
    print(format_rates(index))
    if not args.images:
        return 0
    bad = find_bad_images(index)
    if not bad:
        print(f"all {len(index):,} images decode and are 178x218")
        return 0
    for name, problem in bad:
        print(f"bad image {index.image_dir / name}: {problem}")
    print(f"facegen: error: {len(bad):,} of {len(index):,} images in {index.image_dir} are unreadable or of the wrong "
          "size (listed above); replace them from the original download", file=sys.stderr)
    return 1


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

    from facegen.vqvae_training import vqvae_folder

    profile = get_profile(args.profile)
    print(describe(profile))
    with _writing(vqvae_folder(profile), "the VQ-VAE"):
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
    from facegen.gpt import METADATA_FILE, MODEL_DIR, describe_gpt, gpt_folder, train_gpt

    from accelerate import PartialState

    profile = get_profile(args.profile)
    if PartialState().is_main_process:  # under `accelerate launch`, one process speaks
        print(describe(profile))
    from facegen.pipeline import ensure_tokens

    with PartialState().main_process_first():  # the main process builds missing tokens; the others then read them
        splits = ensure_tokens(profile, progress=PartialState().is_main_process)
    with _writing(gpt_folder(profile), "the GPT"):
        run = train_gpt(profile, splits=splits, steps=args.steps, resume=not args.restart)
    if run.is_main_process:
        saved = run.folder / MODEL_DIR / METADATA_FILE
        if saved.is_file():
            print(f"{describe_gpt(json.loads(saved.read_text()))}; saved in {saved.parent}")
    return 0


def _cmd_train_gan_decoder(args: argparse.Namespace) -> int:
    from facegen.config import describe, get_profile
    from facegen.gan_decoder import gan_decoder_folder, train_gan_decoder

    profile = get_profile(args.profile)
    print(describe(profile))
    from facegen.pipeline import ensure_vqvae, perceptual_classifier

    vqvae, classifier = ensure_vqvae(profile), perceptual_classifier(profile)
    with _writing(gan_decoder_folder(profile), "the GAN-tuned decoder"):
        run = train_gan_decoder(profile, vqvae=vqvae, classifier=classifier, steps=args.steps,
                                resume=not args.restart)
    if run.validation:
        last = run.validation[-1]
        print(f"GAN-tuned decoder in {run.folder}: {len(run.history)} steps, {run.seconds / 60:.1f} min; validation "
              f"PSNR {last['psnr']:.2f} dB, SSIM {last['ssim']:.3f}, sharpness {last['sharpness']:.2f}; "
              f"perceptual loss: {run.perceptual}")
    return 0


def _cmd_train_vqgan(args: argparse.Namespace) -> int:
    from facegen.config import describe, get_profile
    from facegen.vqgan_training import train_vqgan, vqgan_folder

    profile = get_profile(args.profile)
    print(describe(profile))
    from facegen.pipeline import perceptual_classifier

    classifier = perceptual_classifier(profile)
    with _writing(vqgan_folder(profile), "the small VQGAN"):
        run = train_vqgan(profile, classifier=classifier, steps=args.steps, resume=not args.restart)
    if run.validation:
        last = run.validation[-1]
        print(f"small VQGAN in {run.folder}: {len(run.history)} steps, {run.seconds / 60:.1f} min; validation "
              f"PSNR {last['psnr']:.2f} dB, SSIM {last['ssim']:.3f}, {last['usage']:.0%} of codes used; "
              f"perceptual loss: {run.perceptual}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import math
    import time

    from facegen.sampling import _check_settings, parse_attributes

    # Every argument is checked here, before anything is loaded or trained (that can take hours on the gpu profile).
    attributes = parse_attributes(args.attr)
    try:
        _check_settings(args.n, args.guidance, args.temperature, args.top_k, args.top_p)  # sampling's own rules
    except ValueError as error:
        option = str(error).split(" ", 1)[0].replace("_scale", "").replace("_", "-")
        raise ValueError(f"--{option}: {error}") from None
    if args.best_of > 1 and not any(value in (0, 1) for value in attributes.values()):
        raise ValueError(f"--best-of {args.best_of}: needs at least one --attr NAME=0 or NAME=1; without a request "
                         "there is nothing to rank the faces by")
    _check_writable(Path(args.out))

    from facegen.config import get_profile
    from facegen.pipeline import ensure_gpt, ensure_vqvae
    from facegen.sampling import sample_faces
    from facegen.checkpoint import atomic_file
    from facegen.viz import image_grid

    profile = get_profile(args.profile)
    gpt = ensure_gpt(profile)
    vqvae = ensure_vqvae(profile)
    settings = dict(guidance_scale=args.guidance, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    seed=args.seed, progress=True)
    began = time.perf_counter()
    if args.best_of > 1:  # notebook 06, "Best of k": the attribute classifier picks one of k faces per request
        from facegen.pipeline import ensure_classifier
        from facegen.rerank import sample_best_of

        ranker = ensure_classifier(profile)
        faces = sample_best_of(gpt.model, gpt.vocab, vqvae, ranker, [attributes] * args.n, candidates=args.best_of,
                               **settings).faces
    else:
        faces = sample_faces(gpt.model, gpt.vocab, vqvae, args.n, attributes, **settings)
    seconds = time.perf_counter() - began
    out = Path(args.out)
    with atomic_file(out) as f:  # a unique temporary name; a full disk is one error and leaves nothing
        image_grid(faces, nrow=math.ceil(math.sqrt(args.n))).save(f, format="PNG")
    asked = ", ".join(f"{name}={value}" for name, value in attributes.items()) or "nothing (unconditional)"
    ranked = f", best of {args.best_of} by the attribute classifier" if args.best_of > 1 else ""
    print(f"{args.n} faces asked for {asked} (guidance {args.guidance:g}, seed {args.seed}{ranked}) in "
          f"{seconds:.1f} s -> {out}")
    return 0


def _check_writable(out: Path) -> None:
    """--out must be a PNG file we can create: its folder exists (or can be made) and accepts a new file."""
    import tempfile

    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; expected a .png file name")
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: expected a .png file name")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"--out {out}: cannot write in {folder} ({error.strerror or error})") from None


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
    train.add_argument("--steps", type=positive_int, default=None, help="override the profile's step count (>= 1)")
    train.add_argument("--restart", action="store_true",
                       help="start over: ignore the checkpoint and overwrite the trained VQ-VAE")
    train.set_defaults(func=_cmd_train_vqvae)

    train_vqgan = commands.add_parser("train-vqgan", parents=[common],
                                      help="train (or resume) the profile's small VQGAN (notebook 07)")
    train_vqgan.add_argument("--steps", type=positive_int, default=None,
                             help="override the profile's step count (>= 1)")
    train_vqgan.add_argument("--restart", action="store_true",
                             help="start over: ignore the checkpoint and overwrite the trained VQGAN")
    train_vqgan.set_defaults(func=_cmd_train_vqgan)

    tune = commands.add_parser("train-gan-decoder", parents=[common],
                               help="fine-tune (or resume) the VQ-VAE's decoder with the VQGAN losses (notebook 07)")
    tune.add_argument("--steps", type=positive_int, default=None, help="override the profile's step count (>= 1)")
    tune.add_argument("--restart", action="store_true",
                      help="start over: ignore the checkpoint and overwrite the fine-tuned decoder (needed after the "
                           "VQ-VAE was retrained)")
    tune.set_defaults(func=_cmd_train_gan_decoder)

    train_gpt = commands.add_parser("train-gpt", parents=[common], help="train (or resume) the profile's GPT; "
                                    "multi-GPU: `accelerate launch -m facegen.cli train-gpt`")
    train_gpt.add_argument("--steps", type=positive_int, default=None, help="override the profile's step count (>= 1)")
    train_gpt.add_argument("--restart", action="store_true",
                           help="start over: ignore the checkpoint and overwrite the trained GPT (needed after the "
                                "VQ-VAE was retrained)")
    train_gpt.set_defaults(func=_cmd_train_gpt)

    sample = commands.add_parser("sample", parents=[common], help="sample faces from the profile's GPT into a PNG grid")
    sample.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                        help="condition on an attribute, VALUE 0, 1 or ? (repeatable; the others are ?)")
    sample.add_argument("--n", type=_sample_count, default=16,
                        help=f"number of faces, 1 to {MAX_SAMPLES} (one batch in memory; default 16)")
    sample.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    sample.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1)")
    sample.add_argument("--top-k", type=int, default=None, help="sample among the k most likely codes")
    sample.add_argument("--top-p", type=float, default=None, help="sample among the codes holding probability p")
    sample.add_argument("--seed", type=_int_at_least(0), default=0)
    sample.add_argument("--best-of", type=_int_at_least(1), default=1, metavar="K",
                        help="draw K faces per face shown and keep the one the attribute classifier finds closest to "
                             "the --attr request (K times the sampling; loads, or first trains, the classifier)")
    sample.add_argument("--out", required=True, help="PNG file to write (atomically)")
    sample.set_defaults(func=_cmd_sample)

    commands.add_parser("tokenize", parents=[common], help="encode the dataset into VQ-VAE tokens (once)"
                        ).set_defaults(func=_cmd_tokenize)

    data = commands.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="render SynthFaces in the CelebA folder layout")
    synth.add_argument("--n", type=_int_at_least(10), required=True, help="number of images (>= 10)")
    synth.add_argument("--out", required=True, help="output folder (CelebA layout)")
    synth.add_argument("--seed", type=_int_at_least(0), default=0)
    synth.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    synth.set_defaults(func=_cmd_data_synth)
    summary = data.add_parser("summary", help="check a CelebA-layout folder: its text files, then every image "
                              "(decoded, 178x218); prints counts and attribute rates; exit code 1 if an image is bad")
    summary.add_argument("root", help="folder with img_align_celeba/ and the two list files")
    summary.add_argument("--images", action=argparse.BooleanOptionalAction, default=True,
                         help="decode every image and check its size (default; --no-images checks the text files "
                              "and the listing only, in seconds)")
    summary.set_defaults(func=_cmd_data_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    from facegen.errors import FacegenError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError, FacegenError) as error:  # one clear line, no traceback
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"facegen: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # the disk or the file system said no: say which file
        where = f" {error.filename}" if error.filename else ""
        print(f"facegen: error:{where} {error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
