"""Peak host memory of each stage of the `gpu` profile's data path, measured on a small CelebA-layout folder, for
the README's table *Real CelebA: memory per stage* (issue 14).

    python benchmarks/stage_memory.py STAGE N DATA ARTIFACTS     STAGE: open | vqvae | tokenize | gpt

DATA is a CelebA-layout folder of N faces (e.g. `facegen data synth --n 2000 --out DATA`), ARTIFACTS an empty folder
(FACEGEN_ARTIFACTS). The profile is `gpu` with its data settings (source celeba, 128 px, streamed, 4 DataLoader
workers) and batch sizes (VQ-VAE 64, GPT 40 x 2), but small models (the `ci` profile's widths) and a few steps, so
what is measured is the data path, not the gpu models' weights and activations (those live on the GPU there). The
tokenize and gpt stages build their prerequisites first, outside the measurement. It prints one line
`RESULT {...}` with the peak, sampled every 20 ms, of the proportional set size (PSS) of the process and its
DataLoader workers together (PSS counts pages shared after fork once), before and during the stage, in MiB. Run it
for two sizes N: what grows with N is what scales to CelebA's 202,599 faces.
"""
import json, os, sys, threading, time
stage, n, data, artifacts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["FACEGEN_DATA"], os.environ["FACEGEN_ARTIFACTS"] = data, artifacts
import psutil
import torch
from facegen.config import get_profile

me = psutil.Process()


def pss() -> int:
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


profile = get_profile("gpu").replace(
    data={"n_images": n},  # source celeba, 128 px, stream=True, num_workers=4: the gpu profile's data settings
    vqvae={"embed_dim": 32, "hidden": 32, "n_res_blocks": 1, "steps": 6, "val_every": 1000},  # batch 64 (gpu)
    gpt={"n_layer": 2, "n_embd": 64, "n_head": 4, "steps": 6, "val_every": 1000, "warmup_steps": 2},  # batch 40 x 2
)
peak, done = [0], threading.Event()


def sample():
    while not done.is_set():
        peak[0] = max(peak[0], pss())
        time.sleep(0.02)


def run():
    if stage == "open":
        from facegen.data.dataset import open_dataset
        return [len(open_dataset(profile, s)) for s in ("train", "valid", "test")]
    if stage == "vqvae":
        from facegen.vqvae_training import train_vqvae
        return train_vqvae(profile, progress=False).folder.name
    if stage == "tokenize":
        from facegen.pipeline import ensure_tokens
        return {k: len(v) for k, v in ensure_tokens(profile, progress=False).items()}
    if stage == "gpt":
        from facegen.gpt import train_gpt
        return str(train_gpt(profile, progress=False, val_sequences=64).folder)


if stage in ("tokenize", "gpt"):  # their prerequisites are built first, outside the measurement
    from facegen.pipeline import ensure_tokens, ensure_vqvae
    ensure_vqvae(profile, progress=False)
    if stage == "gpt":
        ensure_tokens(profile, progress=False)
before = pss()
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
began = time.perf_counter()
result = run()
done.set(); sampler.join()
print("RESULT " + json.dumps({"stage": stage, "n": n, "before_mb": before / 2**20, "peak_mb": peak[0] / 2**20,
                              "growth_mb": (peak[0] - before) / 2**20, "s": time.perf_counter() - began,
                              "result": str(result)}))
