"""One command that runs the `gpu` profile end to end and says what works, how fast, and how much memory it took.

    python benchmarks/gpu_check.py [--tiny] [--out DIR] [--keep]        (or: make gpu-check)

On fresh SynthFaces, written in CelebA's folder layout to a temporary folder (FACEGEN_DATA), with every artifact in
another temporary folder (FACEGEN_ARTIFACTS), so nothing of yours is read or touched, it runs each stage through the
package's public functions, as a learner's notebooks and `facegen` commands do:

    data        facegen.data.synthfaces.generate              (2,000 images)
    peak        a large bf16 matmul on CUDA (fp32 on a CPU)   the peak that MFU is measured against
    vqvae       facegen.vqvae_training.train_vqvae            (500 steps x 64)
    tokenize    facegen.pipeline.ensure_tokens                (every split, on the VQ-VAE's device)
    gpt         facegen.gpt.train_gpt                         (GPT-2 86M, batch 40 x 2 in bf16, 200 steps)
    gpt_variants  the same at 80 x 1 and compiled (100 steps each): which levers raise MFU
    classifier  facegen.classifier.train_classifier           (300 steps x 128)
    gan_decoder facegen.gan_decoder.train_gan_decoder         (200 steps x 16, GAN term from step 50)
    sample      facegen.sampling.sample_faces                 (batch 16 and 256, KV cache dynamic and static;
                                                                   models from ensure_*)
    explorer    facegen.widgets.Explorer.generate             (16 faces, guidance 3, and a completion)

The PNG (gpu_check_samples.png) shows validation faces, their VQ-VAE reconstructions and the first batch of samples,
one row each.

and prints per stage: wall time, throughput (images/s, tokens/s, faces/s), the GPT's model FLOPs utilisation (MFU)
against the matmul peak measured in the same run, and peak GPU memory; then writes a PNG grid of samples. The target
on one H200 is under 5 minutes in all, data generation included.

A stage that fails prints its name and the error (with the traceback's last lines); the stages that do not depend on
it still run, and the command exits with status 1 at the end. `--tiny` (the default without CUDA) shrinks everything
to the `ci` profile's model sizes and a few steps, so the same code path runs on a CPU in a minute or two: the test
suite runs it that way (tests/test_gpu_check.py), which keeps this script working between GPU runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

# Stages and what each needs first.
STAGES = {
    "data": (),
    "peak": (),
    "vqvae": ("data",),
    "tokenize": ("vqvae",),
    "gpt": ("tokenize", "peak"),
    "gpt_variants": ("tokenize", "peak"),
    "classifier": ("data",),
    "gan_decoder": ("vqvae", "classifier"),
    "sample": ("gpt",),
    "explorer": ("gpt",),
}


@dataclass
class Sizes:
    """How much of each stage to run."""

    images: int
    vqvae_steps: int
    gpt_steps: int
    classifier_steps: int
    gan_decoder_steps: int
    sample_batches: tuple[int, ...]
    explorer_batch: int
    matmul_n: int


FULL = Sizes(images=2000, vqvae_steps=500, gpt_steps=200, classifier_steps=300, gan_decoder_steps=200,
             sample_batches=(16, 256), explorer_batch=16, matmul_n=8192)
TINY = Sizes(images=120, vqvae_steps=20, gpt_steps=10, classifier_steps=10, gan_decoder_steps=4,
             sample_batches=(2, 4), explorer_batch=1, matmul_n=1024)
TINY_BATCHES = {"vqvae": 8, "gpt": 4, "classifier": 8, "gan_decoder": 2}  # the ci profile's, halved or more


@dataclass
class Result:
    name: str
    ok: bool = False
    skipped: str = ""
    seconds: float = 0.0
    numbers: dict = field(default_factory=dict)  # label -> text
    error: str = ""
    peak_memory: float | None = None  # GiB


def check_profile(tiny: bool, sizes: Sizes):
    """The `gpu` profile (or, with --tiny, the `ci` profile's model sizes) reading the generated folder as CelebA,
    with the steps capped for a check."""
    from facegen.config import get_profile

    base = get_profile("ci" if tiny else "gpu")
    if tiny:
        base = base.replace(**{section: {"batch_size": n} for section, n in TINY_BATCHES.items()})
    return base.replace(
        name="gpu-check" if not tiny else "gpu-check-tiny",
        data={"source": "celeba", "n_images": 0, "num_workers": 0 if tiny else 4},
        vqvae={"steps": sizes.vqvae_steps, "val_every": sizes.vqvae_steps},
        gpt={"steps": sizes.gpt_steps, "warmup_steps": max(1, sizes.gpt_steps // 10), "val_every": sizes.gpt_steps},
        classifier={"steps": sizes.classifier_steps},
        gan_decoder={"steps": sizes.gan_decoder_steps, "disc_start": max(1, sizes.gan_decoder_steps // 4),
                     "val_every": sizes.gan_decoder_steps},
    )


def matmul_peak(device: str, n: int, repeats: int = 10) -> tuple[float, str]:
    """Best FLOP/s of an n x n @ n x n matmul: bf16 on CUDA (what AMP trains in), fp32 on a CPU (what the CPU
    course trains in: most CPUs emulate bf16)."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best, str(dtype).replace("torch.", "")


class Check:
    def __init__(self, args):
        import torch

        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.tiny = args.tiny if args.tiny is not None else not self.cuda
        self.sizes = TINY if self.tiny else FULL
        self.progress = args.progress
        self.out = Path(args.out) if args.out else None
        self.results: dict[str, Result] = {}
        self.state: dict = {}

    # --- running stages ----------------------------------------------------------------------------------------

    def run(self, name: str, fn) -> Result:
        result = Result(name)
        missing = [need for need in STAGES[name] if not self.results.get(need, Result(need)).ok]
        if missing:
            result.skipped = f"needs {', '.join(missing)}"
            self.results[name] = result
            print(f"[{name}] skipped: {result.skipped}", flush=True)
            return result
        print(f"[{name}] ...", flush=True)
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            result.numbers = fn() or {}
            if self.cuda:
                self.torch.cuda.synchronize()
            result.ok = True
        except Exception as error:  # noqa: BLE001 -- reported, and the independent stages go on
            tail = "".join(traceback.format_exception(error)[-3:]).rstrip()
            result.error = f"{type(error).__name__}: {error}"
            print(f"[{name}] FAILED: {result.error}\n{tail}", flush=True)
        result.seconds = time.perf_counter() - start
        if self.cuda:
            result.peak_memory = self.torch.cuda.max_memory_allocated() / 2**30
        self.results[name] = result
        if result.ok:
            extra = "; ".join(f"{k} {v}" for k, v in result.numbers.items())
            memory = f"; peak GPU memory {result.peak_memory:.1f} GiB" if result.peak_memory is not None else ""
            print(f"[{name}] ok in {result.seconds:.1f} s{'; ' + extra if extra else ''}{memory}", flush=True)
        return result

    # --- the stages --------------------------------------------------------------------------------------------

    def data(self):
        from facegen.data.synthfaces import generate

        folder = Path(os.environ["FACEGEN_DATA"])
        generate(folder, self.sizes.images, seed=0, progress=self.progress)
        seconds = time.perf_counter() - self._stage_start()
        return {"images": f"{self.sizes.images:,}", "img/s": f"{self.sizes.images / max(seconds, 1e-9):,.0f}"}

    def _stage_start(self) -> float:
        return self._started_at

    def peak(self):
        flops, dtype = matmul_peak("cuda" if self.cuda else "cpu", self.sizes.matmul_n)
        self.state["peak"] = flops
        return {"matmul peak": f"{flops / 1e12:,.1f} TFLOP/s ({dtype}, {self.sizes.matmul_n}^3"
                               f"{'' if self.cuda else '; CPU: fp32, which the CPU course trains in'})"}

    def vqvae(self):
        from facegen.vqvae_training import train_vqvae

        run = train_vqvae(self.profile, progress=self.progress)
        cfg = self.profile.vqvae
        numbers = {"steps": f"{cfg.steps} x {cfg.batch_size}"}
        if getattr(run, "validation", None):
            last = run.validation[-1]
            if "psnr" in last:
                numbers["val PSNR"] = f"{last['psnr']:.1f} dB"
        speed = getattr(run, "images_per_second", None)
        if speed:
            numbers["train img/s"] = f"{speed:,.0f}"
        return numbers

    def tokenize(self):
        from facegen.pipeline import ensure_tokens
        from facegen.tokenize_dataset import read_token_info, tokens_folder

        splits = ensure_tokens(self.profile, progress=self.progress)
        self.state["splits"] = splits
        info = read_token_info(tokens_folder(self.profile))
        self.state["vqvae_fingerprint"] = info.vqvae
        return {"images": f"{sum(info.counts.values()):,}", "encode img/s": f"{info.images_per_second:,.0f}"}

    def gpt(self):
        from facegen.gpt import train_gpt, training_flops_per_token

        cfg = self.profile.gpt
        began = time.perf_counter()
        run = train_gpt(self.profile, splits=self.state["splits"], progress=self.progress,
                        vqvae_fingerprint=self.state["vqvae_fingerprint"])
        wall = time.perf_counter() - began
        tokens = run.steps * cfg.batch_size * cfg.grad_accum * run.vocab.length
        flops = training_flops_per_token(run.model.config)
        parameters = sum(p.numel() for p in run.model.parameters())
        measured = run.steady_tokens_per_second or run.tokens_per_second or tokens / wall
        numbers = {"model": f"{parameters / 1e6:.1f}M parameters", "steps": f"{run.steps} x {cfg.batch_size} x "
                   f"{cfg.grad_accum}", "tokens/s": f"{measured:,.0f} (after warm-up; {tokens / wall:,.0f} over the "
                   f"whole call)", "MFU": f"{measured * flops / self.state['peak']:.1%}"}
        if run.validation:
            numbers["val loss"] = f"{run.validation[-1]['val_loss']:.3f} nats/token"
        return numbers

    def gpt_variants(self):
        """The levers of issue 13's MFU target at the same effective batch of 80 sequences: one micro-batch of 80
        instead of 40 x 2, and torch.compile (inductor on CUDA; the eager backend on a CPU, which only checks the
        wiring). Each is a short run from scratch; tokens/s after warm-up, so compilation is left out."""
        from facegen.gpt import train_gpt, training_flops_per_token

        base = self.profile.gpt
        steps = max(self.sizes.gpt_steps // 2, 8)
        variants = {f"{base.batch_size * base.grad_accum} x 1": {"batch_size": base.batch_size * base.grad_accum,
                                                                  "grad_accum": 1},
                    f"{base.batch_size} x {base.grad_accum} compiled": {"compile": "inductor" if self.cuda
                                                                         else "eager"}}
        numbers = {}
        for i, (label, change) in enumerate(variants.items()):
            profile = self.profile.replace(gpt={**change, "steps": steps, "val_every": steps})
            run = train_gpt(profile, splits=self.state["splits"], progress=self.progress,
                            folder=self.profile.artifacts / f"gpt-variant-{i}",
                            vqvae_fingerprint=self.state["vqvae_fingerprint"], val_sequences=64)
            speed = run.steady_tokens_per_second or run.tokens_per_second
            mfu = speed * training_flops_per_token(run.model.config) / self.state["peak"]
            numbers[label] = f"{speed:,.0f} tokens/s, MFU {mfu:.1%}"
        return numbers

    def classifier(self):
        from facegen.classifier import classifier_folder, train_classifier

        run = train_classifier(self.profile, folder=classifier_folder(self.profile), progress=self.progress)
        cfg = self.profile.classifier
        numbers = {"steps": f"{cfg.steps} x {cfg.batch_size}"}
        if getattr(run, "validation", None) and "mean_accuracy" in run.validation[-1]:
            numbers["val accuracy"] = f"{run.validation[-1]['mean_accuracy']:.1%}"
        return numbers

    def gan_decoder(self):
        from facegen.gan_decoder import train_gan_decoder
        from facegen.pipeline import ensure_classifier, ensure_vqvae
        from facegen.vqgan_losses import lpips_available

        classifier = None if lpips_available() else ensure_classifier(self.profile, progress=self.progress)
        train_gan_decoder(self.profile, vqvae=ensure_vqvae(self.profile, progress=self.progress),
                          classifier=classifier, progress=self.progress)
        cfg = self.profile.gan_decoder
        return {"steps": f"{cfg.steps} x {cfg.batch_size}"}

    def _models(self):
        from facegen.pipeline import ensure_gpt, ensure_vqvae

        if "gpt_model" not in self.state:
            loaded = ensure_gpt(self.profile, progress=self.progress)
            self.state["gpt_model"] = loaded
            self.state["vqvae_model"] = ensure_vqvae(self.profile, progress=self.progress)
        return self.state["gpt_model"], self.state["vqvae_model"]

    def sample(self):
        from facegen.data.transforms import from_uint8
        from facegen.pipeline import load_images
        from facegen.sampling import sample_faces
        from facegen.viz import save_image_grid

        loaded, vqvae = self._models()
        device = next(loaded.model.parameters()).device
        numbers = {"device": f"{device} ({next(loaded.model.parameters()).dtype})".replace("torch.", "")}
        if self.cuda:
            sample_faces(loaded.model, loaded.vocab, vqvae, 2, seed=123)  # warm-up: kernels, allocator
        for n in self.sizes.sample_batches:
            if self.cuda:
                self.torch.cuda.synchronize()
            began = time.perf_counter()
            faces = sample_faces(loaded.model, loaded.vocab, vqvae, n, seed=0, use_cache=True)
            seconds = time.perf_counter() - began
            numbers[f"batch {n}"] = f"{n / seconds:,.1f} faces/s ({seconds:.2f} s)"
            if n == self.sizes.sample_batches[0]:
                first = faces
        # the static KV cache, with which transformers compiles the decoding step on a GPU: the first call compiles
        # (on a CPU nothing is compiled: one small batch checks the path)
        for n in self.sizes.sample_batches if self.cuda else self.sizes.sample_batches[:1]:
            if self.cuda:
                sample_faces(loaded.model, loaded.vocab, vqvae, n, seed=1, cache="static")
            if self.cuda:
                self.torch.cuda.synchronize()
            began = time.perf_counter()
            sample_faces(loaded.model, loaded.vocab, vqvae, n, seed=0, cache="static")
            if self.cuda:
                self.torch.cuda.synchronize()
            seconds = time.perf_counter() - began
            numbers[f"static cache, batch {n}"] = f"{n / seconds:,.1f} faces/s ({seconds:.2f} s, after a warm-up call)"
        if not bool(self.torch.isfinite(first).all()) or float(first.std()) < 1e-3:
            raise RuntimeError(f"the sampled faces are blank or not finite (std {float(first.std()):.2g})")
        # One picture to look at: validation faces, their VQ-VAE reconstructions, then GPT samples (a few steps of
        # training make blurry faces at best; blank or noise means something is wrong).
        columns = min(8, len(first))
        real = from_uint8(load_images(self.profile, "valid", progress=self.progress)[:columns])
        recon = vqvae.decode_indices(vqvae.encode_indices(real.to(next(vqvae.parameters()).device))).cpu()
        path = self.out / "gpu_check_samples.png"
        save_image_grid(self.torch.cat([real, recon.float(), first]), path, nrow=columns)
        self.state["png"] = path
        numbers["png"] = str(path)
        return numbers

    def explorer(self):
        from facegen.pipeline import load_images
        from facegen.widgets import Explorer

        loaded, vqvae = self._models()
        valid = load_images(self.profile, "valid", progress=self.progress)[:64]
        explorer = Explorer(loaded.model, loaded.vocab, vqvae, valid_images=valid,
                            batch_size=self.sizes.explorer_batch)
        began = time.perf_counter()
        if explorer.generate() is None:
            raise RuntimeError(f"Explorer.generate: {explorer.status.value}")
        guided = time.perf_counter() - began
        explorer.complete.value = True
        explorer.keep_rows.value = loaded.vocab.grid_size * 3 // 4
        began = time.perf_counter()
        if explorer.generate() is None:
            raise RuntimeError(f"Explorer.generate (completion): {explorer.status.value}")
        completion = time.perf_counter() - began
        n = self.sizes.explorer_batch
        return {"generate": f"{n} faces in {guided:.2f} s (guidance {explorer.guidance.value:g})",
                "completion": f"{n} faces in {completion:.2f} s"}

    # --- all of it ---------------------------------------------------------------------------------------------

    def main(self) -> int:
        torch = self.torch
        where = (f"cuda ({torch.cuda.get_device_name(0)})" if self.cuda
                 else f"cpu ({torch.get_num_threads()} threads)")
        mode = "tiny (ci-sized models, a few steps)" if self.tiny else "gpu profile, capped steps"
        print(f"facegen GPU check: {mode} on {where}; torch {torch.__version__}", flush=True)
        began = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix="facegen-gpu-check-"))
        os.environ["FACEGEN_DATA"] = str(work / "data" / "celeba")
        os.environ["FACEGEN_ARTIFACTS"] = str(work / "artifacts")
        self.out = self.out or work
        self.out.mkdir(parents=True, exist_ok=True)
        self.profile = check_profile(self.tiny, self.sizes)
        try:
            for name in STAGES:
                self._started_at = time.perf_counter()
                self.run(name, getattr(self, name))
        finally:
            if not self.keep:
                shutil.rmtree(work, ignore_errors=True)
        total = time.perf_counter() - began
        return self.report(total, work)

    def report(self, total: float, work: Path) -> int:
        print("\nstage         status   seconds  peak GPU GiB", flush=True)
        for result in self.results.values():
            status = "ok" if result.ok else ("skipped" if result.skipped else "FAILED")
            memory = f"{result.peak_memory:12.2f}" if result.peak_memory is not None else f"{'-':>12}"
            print(f"{result.name:<12}  {status:<7} {result.seconds:8.1f}  {memory}")
        failed = [r.name for r in self.results.values() if not r.ok]
        print(f"total: {total:.1f} s" + (f" (work folder kept: {work})" if self.keep else ""))
        if "png" in self.state:
            print(f"samples: {self.state['png']}")
        if failed:
            print(f"FAILED or skipped: {', '.join(failed)}")
            return 1
        print("all stages ok")
        return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", dest="tiny", action="store_true", default=None,
                      help="ci-sized models and a few steps (the default without CUDA)")
    size.add_argument("--full", dest="tiny", action="store_false",
                      help="the gpu profile's sizes with capped steps (the default with CUDA)")
    parser.add_argument("--out", help="folder for gpu_check_samples.png (default: the temporary work folder, which "
                                      "is then kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data and artifacts")
    parser.add_argument("--progress", action="store_true", help="show the trainers' progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check = Check(args)
    check.keep = args.keep or args.out is None  # without --out, the PNG lives in the work folder: keep it
    return check.main()


if __name__ == "__main__":
    sys.exit(main())
