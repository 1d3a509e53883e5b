"""Tokenizing a dataset: codes equal the VQ-VAE's own encoding, attributes and splits are the source's, a second run
is a no-op, a changed VQ-VAE or dataset re-tokenizes, writes are atomic, and the Hugging Face source gives the same
tokens as the folder layout. A tiny random VQ-VAE and 20 SynthFaces keep it fast."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shutil

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before `datasets` is imported: these tests never touch the hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset, DatasetDict, Features, Image, Value  # noqa: E402

from facegen import cli  # noqa: E402
from facegen.attributes import CELEBA_ATTRIBUTES  # noqa: E402
from facegen.config import get_profile  # noqa: E402
from facegen.data import synthfaces  # noqa: E402
from facegen.data.celeba import read_celeba  # noqa: E402
from facegen.data.dataset import open_dataset, preload  # noqa: E402
from facegen.data.transforms import from_uint8  # noqa: E402
from facegen.pipeline import ensure_tokens  # noqa: E402
from facegen.tokenize_dataset import (  # noqa: E402
    FINGERPRINT_FILE, data_fingerprint, read_token_info, tokenize_dataset, tokenize_split, tokens_folder,
    vqvae_fingerprint,
)
from facegen.vqvae import VQVAE  # noqa: E402
from facegen.vqvae_training import load_vqvae, vqvae_folder  # noqa: E402
from conftest import tiny_face  # noqa: E402

N_IMAGES = 20  # SynthFaces splits them 16 / 2 / 2
SPLIT_SIZES = {"train": 16, "valid": 2, "test": 2}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synth"
    synthfaces.generate(root, n=N_IMAGES, workers=1, progress=False)
    return root


def ci_profile():
    return get_profile("ci").replace(data={"n_images": N_IMAGES})


@pytest.fixture(scope="module")
def images(synth_root):
    """Every split decoded as uint8 (images, attributes): the reference the tokens are checked against."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEGEN_DATA", str(synth_root))
        return {split: preload(open_dataset(ci_profile(), split), progress=False) for split in SPLIT_SIZES}


@pytest.fixture(scope="module")
def make_vqvae(images):
    """`make_vqvae(seed)`: a fresh copy of a tiny random VQ-VAE whose codebook sits on k-means centres of its encoder
    outputs (as after the first training step), so the faces use many different codes."""
    made = {}

    def make(seed: int) -> VQVAE:
        if seed not in made:
            torch.manual_seed(seed)
            model = VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1).eval()
            with torch.no_grad():
                z = model.encoder(from_uint8(images["train"][0][:2]))
                model.quantizer.init_from_kmeans(z.permute(0, 2, 3, 1).reshape(-1, 8))
            made[seed] = model
        return copy.deepcopy(made[seed])

    return make


@pytest.fixture(scope="module")
def expected_codes(make_vqvae, images):
    """`expected_codes(seed, split)`: `encode_indices` of the split's images by `make_vqvae(seed)`, flat (N, 256)."""
    cache = {}

    def codes(seed: int, split: str) -> np.ndarray:
        if (seed, split) not in cache:
            uint8_images = images[split][0]
            encoded = make_vqvae(seed).encode_indices(from_uint8(uint8_images))
            cache[seed, split] = encoded.reshape(len(uint8_images), -1).numpy()
        return cache[seed, split]

    return codes


@pytest.fixture(scope="module")
def built(synth_root, make_vqvae, tmp_path_factory):
    """Artifacts with a saved VQ-VAE (seed 0) and the tokens made from it by `tokenize_dataset(profile)`, once per
    module; returns (artifacts folder, what the build printed)."""
    artifacts = tmp_path_factory.mktemp("built") / "artifacts"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEGEN_DATA", str(synth_root))
        env.setenv("FACEGEN_ARTIFACTS", str(artifacts))
        make_vqvae(0).save_pretrained(vqvae_folder(ci_profile()) / "model")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            tokenize_dataset(ci_profile(), progress=False)  # the VQ-VAE saved in the profile's artifacts
    return artifacts, printed.getvalue()


@pytest.fixture
def profile(built, synth_root, tmp_path, monkeypatch):
    """The ci profile on the 20 SynthFaces, with a copy of the built artifacts (VQ-VAE and tokens) under tmp_path."""
    shutil.copytree(built[0], tmp_path / "artifacts")
    monkeypatch.setenv("FACEGEN_DATA", str(synth_root))
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    return ci_profile()


def count_encodes(model: VQVAE) -> list[int]:
    """Wrap `model.encode_indices` so the returned list counts the images it encodes."""
    seen, original = [0], model.encode_indices

    def counting(x):
        seen[0] += len(x)
        return original(x)

    model.encode_indices = counting
    return seen


def folders_next_to_tokens(profile) -> list[str]:
    return sorted(p.name for p in tokens_folder(profile).parent.iterdir())


def test_codes_attributes_and_splits_are_right(built, profile, synth_root, images, expected_codes):
    notes = [line for line in built[1].splitlines() if line.startswith("[facegen]")]
    assert len(notes) == 1 and notes[0].startswith("[facegen] tokenizing the 'ci' dataset")
    assert notes[0].endswith("(no tokens yet)")
    tokens = tokenize_dataset(profile, progress=False)
    index = read_celeba(synth_root)
    assert list(tokens) == ["train", "valid", "test"]
    for split, size in SPLIT_SIZES.items():
        table = tokens[split].with_format("numpy")[:]
        assert len(tokens[split]) == size
        np.testing.assert_array_equal(table["codes"], expected_codes(0, split))
        np.testing.assert_array_equal(table["attributes"], index.split(split).attributes)
        np.testing.assert_array_equal(table["attributes"], images[split][1].numpy())
        np.testing.assert_array_equal(table["index"], np.arange(size))
    assert tokens["train"].features["codes"].feature.dtype == "int16"
    assert len(np.unique(tokens["train"]["codes"])) > 8  # a real test: the faces do not all map to one code
    info = read_token_info(tokens_folder(profile))
    assert info.counts == SPLIT_SIZES and info.codebook_size == 16 and info.grid_size == 16
    assert info.vqvae == vqvae_fingerprint(load_vqvae(vqvae_folder(profile)))
    assert info.data == data_fingerprint(profile)
    assert info.images_per_second > 0
    assert folders_next_to_tokens(profile) == ["tokens", "vqvae"]  # no temporary folders left


def test_a_second_run_is_a_no_op(profile, make_vqvae, capsys):
    folder = tokens_folder(profile)
    before = (folder.stat().st_ino, (folder / FINGERPRINT_FILE).stat().st_mtime_ns)
    model = make_vqvae(0)  # the same weights as the saved VQ-VAE the tokens were made with
    encoded = count_encodes(model)
    again = tokenize_dataset(profile, vqvae=model, progress=False)
    assert encoded[0] == 0
    assert capsys.readouterr().out == ""
    assert (folder.stat().st_ino, (folder / FINGERPRINT_FILE).stat().st_mtime_ns) == before
    assert len(again["train"]) == 16


def test_a_changed_vqvae_re_tokenizes(profile, make_vqvae, expected_codes, capsys):
    changed = make_vqvae(1)
    encoded = count_encodes(changed)
    tokens = tokenize_dataset(profile, vqvae=changed, progress=False)
    assert "(the VQ-VAE changed)" in capsys.readouterr().out
    assert encoded[0] == N_IMAGES
    for split in SPLIT_SIZES:
        np.testing.assert_array_equal(tokens[split].with_format("numpy")["codes"], expected_codes(1, split))
    assert read_token_info(tokens_folder(profile)).vqvae == vqvae_fingerprint(make_vqvae(1))
    assert folders_next_to_tokens(profile) == ["tokens", "vqvae"]


def test_changed_data_re_tokenizes(profile, synth_root, make_vqvae, tmp_path, monkeypatch, capsys):
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    monkeypatch.setenv("FACEGEN_DATA", str(root))
    model = make_vqvae(0)
    first = tokenize_dataset(profile, vqvae=model, progress=False)  # same bytes, same count: still a no-op
    assert capsys.readouterr().out == ""
    smiling = CELEBA_ATTRIBUTES.index("Smiling")
    was = first["train"][0]["attributes"][smiling]

    lines = (root / "list_attr_celeba.txt").read_text().splitlines(keepends=True)
    values = [int(v) for v in lines[2].split()[1:]]  # line 3: the first image
    values[smiling] = -values[smiling]
    lines[2] = lines[2].split()[0] + "".join(f" {v:2d}" for v in values) + "\n"
    (root / "list_attr_celeba.txt").write_text("".join(lines))

    second = tokenize_dataset(profile, vqvae=model, progress=False)
    assert "(the data changed)" in capsys.readouterr().out
    assert second["train"][0]["attributes"][smiling] == -was
    assert second["train"][0]["codes"] == first["train"][0]["codes"]  # same image, same codes


def test_a_failed_run_leaves_the_previous_tokens_intact(profile, make_vqvae):
    info = read_token_info(tokens_folder(profile))
    broken = make_vqvae(2)
    broken.encode_indices = lambda x: (_ for _ in ()).throw(RuntimeError("interrupted"))
    with pytest.raises(RuntimeError, match="interrupted"):
        tokenize_dataset(profile, vqvae=broken, progress=False)
    assert read_token_info(tokens_folder(profile)) == info
    assert folders_next_to_tokens(profile) == ["tokens", "vqvae"]


def test_tokenize_split_streams_and_preloaded_agree(profile, images, make_vqvae, expected_codes):
    model = make_vqvae(0)
    streamed = tokenize_split(model, open_dataset(profile, "train"), batch_size=5, progress=False)
    preloaded = tokenize_split(model, images["train"][0], batch_size=7, progress=False)
    assert streamed.dtype == torch.int16 and streamed.shape == (16, 16, 16)
    assert torch.equal(streamed, preloaded)
    np.testing.assert_array_equal(streamed.reshape(16, -1).numpy(), expected_codes(0, "train"))
    with pytest.raises(ValueError, match=r"tokenize_split: images must be a uint8 tensor \(N, 3, S, S\), a "
                                         r"FaceDataset or FaceImages; got torch.float32 \(2, 3, 128, 128\)"):
        tokenize_split(model, torch.zeros(2, 3, 128, 128), progress=False)


def test_vqvae_fingerprint_is_the_saved_weights(profile, make_vqvae):
    model = make_vqvae(0)
    assert vqvae_fingerprint(load_vqvae(vqvae_folder(profile))) == vqvae_fingerprint(model)
    with torch.no_grad():
        model.encoder.net[0].bias[0] += 1e-6
    assert vqvae_fingerprint(model) != vqvae_fingerprint(make_vqvae(0))


def test_missing_data_is_named(profile, make_vqvae, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere: no dataset in the CelebA layout \(missing "
                                                r"list_attr_celeba.txt, list_eval_partition.txt, img_align_celeba\)"):
        tokenize_dataset(profile, vqvae=make_vqvae(0), progress=False)


def hf_copy(root, path):
    """The SynthFaces folder as a flwrlabs/celeba-shaped DatasetDict (same JPEG bytes, so same pixels)."""
    index = read_celeba(root)
    features = Features({"image": Image(), "celeb_id": Value("int64"), **{n: Value("bool") for n in CELEBA_ATTRIBUTES}})
    splits = {}
    for split in SPLIT_SIZES:
        part = index.split(split)
        columns = {"image": [str(part.path(i)) for i in range(len(part))], "celeb_id": list(range(len(part))),
                   **{name: (part.attributes[:, c] == 1).tolist() for c, name in enumerate(CELEBA_ATTRIBUTES)}}
        splits[split] = Dataset.from_dict(columns, features=features)
    DatasetDict(splits).save_to_disk(str(path))
    return path


def test_the_hugging_face_source_gives_the_same_tokens(profile, synth_root, images, make_vqvae, expected_codes,
                                                     tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEGEN_DATA", str(hf_copy(synth_root, tmp_path / "hf")))
    hf_profile = profile.replace(data={"source": "hf"})
    model = make_vqvae(0)
    tokens = tokenize_dataset(hf_profile, vqvae=model, progress=False)
    for split in SPLIT_SIZES:
        table = tokens[split].with_format("numpy")[:]
        np.testing.assert_array_equal(table["codes"], expected_codes(0, split))
        np.testing.assert_array_equal(table["attributes"], images[split][1].numpy())
    assert "(the data changed)" in capsys.readouterr().out  # the same faces, but another source
    encoded = count_encodes(model)
    tokenize_dataset(hf_profile, vqvae=model, progress=False)
    assert encoded[0] == 0 and capsys.readouterr().out == ""  # the datasets fingerprints are stable: a no-op


def test_ensure_tokens_and_the_cli(profile, monkeypatch, capsys):
    tokens = ensure_tokens(profile, progress=False)  # the saved VQ-VAE is used, nothing is trained
    assert {split: len(tokens[split]) for split in tokens} == SPLIT_SIZES
    monkeypatch.setattr("facegen.config.get_profile", lambda name=None: profile)
    capsys.readouterr()
    assert cli.main(["tokenize", "--profile", "ci"]) == 0
    out = capsys.readouterr().out
    assert "[facegen]" not in out  # nothing to build
    assert out.splitlines()[-1].startswith(f"tokens in {tokens_folder(profile)}: train 16, valid 2, test 2 faces; "
                                           "encoded at ")
    assert out.endswith(" img/s\n")


# ------------------------------------------------------------------------------------------ resumable encoding


class Killed(BaseException):
    """Stands in for a kill (Ctrl-C, a closed Colab tab): not an Exception, so nothing on the way catches it."""


def killed_after(model: VQVAE, batches: int) -> VQVAE:
    """`model`, whose encoder raises `Killed` on the batch after its first `batches` ones."""
    calls, original = [0], model.encode_indices

    def encode(x):
        calls[0] += 1
        if calls[0] > batches:
            raise Killed
        return original(x)

    model.encode_indices = encode
    return model


def arrow_bytes(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.arrow"))}


def test_an_interrupted_run_resumes_where_it_stopped_and_gives_the_same_bytes(profile, make_vqvae, expected_codes,
                                                                               tmp_path, capsys):
    # chunks of 4 faces in batches of 2: train is 4 chunks, valid and test 1 each; the kill comes after 2 chunks
    whole = tokenize_dataset(profile, vqvae=make_vqvae(0), out_dir=tmp_path / "whole", progress=False, batch_size=2,
                             chunk_size=4)
    out = tmp_path / "tokens"
    with pytest.raises(Killed):
        tokenize_dataset(profile, vqvae=killed_after(make_vqvae(0), batches=5), out_dir=out, progress=False,
                         batch_size=2, chunk_size=4)
    partial = tmp_path / "tokens.partial"
    assert not out.exists()
    assert sorted(p.name for p in partial.iterdir()) == ["progress.json", "train-0000000-0000004.npy",
                                                         "train-0000004-0000008.npy"]
    capsys.readouterr()

    model = make_vqvae(0)
    encoded = count_encodes(model)
    resumed = tokenize_dataset(profile, vqvae=model, out_dir=out, progress=True, batch_size=2, chunk_size=4)
    printed = capsys.readouterr()
    assert encoded[0] == N_IMAGES - 8  # only the chunks that were missing
    assert f"[facegen] resuming: 8 of {N_IMAGES} faces are already encoded in {partial}" in printed.out
    assert re.search(r"tokenizing train:\s+50%.*\| 8/16 ", printed.err)  # the bar starts where the last run stopped
    assert arrow_bytes(out) == arrow_bytes(tmp_path / "whole")  # byte-identical to an uninterrupted run
    for split in SPLIT_SIZES:
        np.testing.assert_array_equal(resumed[split].with_format("numpy")["codes"], expected_codes(0, split))
        np.testing.assert_array_equal(resumed[split]["attributes"], whole[split]["attributes"])
    assert not partial.exists()  # the chunks are in the final folder now
    info = read_token_info(out)
    assert info.counts == SPLIT_SIZES and info.seconds > 0 and info.images_per_second > 0


def test_chunks_of_another_vqvae_are_discarded_and_a_damaged_chunk_is_encoded_again(profile, make_vqvae,
                                                                                      expected_codes, tmp_path,
                                                                                      capsys):
    out, partial = tmp_path / "tokens", tmp_path / "tokens.partial"
    with pytest.raises(Killed):
        tokenize_dataset(profile, vqvae=killed_after(make_vqvae(0), batches=4), out_dir=out, progress=False,
                         batch_size=2, chunk_size=4)
    capsys.readouterr()
    changed = make_vqvae(1)
    with pytest.raises(Killed):
        tokenize_dataset(profile, vqvae=killed_after(changed, batches=6), out_dir=out, progress=False,
                         batch_size=2, chunk_size=4)
    assert ("[facegen] starting over: the 2 finished chunk(s) in " f"{partial} cannot be reused (the VQ-VAE changed)"
            in capsys.readouterr().out)
    assert len(list(partial.glob("*.npy"))) == 3
    (partial / "train-0000004-0000008.npy").write_bytes(b"half a chunk")  # e.g. a disk that failed under it

    model = make_vqvae(1)
    encoded = count_encodes(model)
    tokens = tokenize_dataset(profile, vqvae=model, out_dir=out, progress=False, batch_size=2, chunk_size=4)
    assert encoded[0] == N_IMAGES - 8  # chunks 1 and 3 were kept; 2 was damaged, so encoded again
    for split in SPLIT_SIZES:
        np.testing.assert_array_equal(tokens[split].with_format("numpy")["codes"], expected_codes(1, split))

    with pytest.raises(Killed):  # another chunk size cannot reuse the chunks either
        tokenize_dataset(profile, vqvae=killed_after(make_vqvae(0), batches=2), out_dir=out, progress=False,
                         batch_size=2, chunk_size=4)
    capsys.readouterr()
    tokenize_dataset(profile, vqvae=make_vqvae(0), out_dir=out, progress=False, batch_size=2, chunk_size=8)
    assert "cannot be reused (the chunk size changed)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------- peak memory

PEAK_RSS_SCRIPT = r"""
# Tokenize the CelebA-layout folder FACEGEN_DATA (argv[1] faces) and print the peak growth of this process's resident
# set size during the call, sampled every 2 ms, as JSON.
import json, os, resource, sys, threading, time

import torch

from facegen.config import get_profile
from facegen.tokenize_dataset import tokenize_dataset
from facegen.vqvae import VQVAE

PAGE = resource.getpagesize()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


torch.manual_seed(0)
torch.set_num_threads(1)
model = VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1).eval()
profile = get_profile("ci").replace(data={"image_size": 64, "n_images": int(sys.argv[1])})
peak, done = [0], threading.Event()


def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)


before = rss()
sampler = threading.Thread(target=sample)
sampler.start()
tokens = tokenize_dataset(profile, vqvae=model, progress=False, batch_size=64, chunk_size=256)
done.set()
sampler.join()
print("RESULT " + json.dumps({"faces": sum(len(split) for split in tokens.values()), "growth": peak[0] - before}))
"""


def celeba_folder(root, n: int):
    """A CelebA-layout folder of `n` faces (80/10/10 %), hard links to 16 distinct JPEGs: quick to write."""
    faces = root.parent / "faces"
    if not faces.is_dir():
        faces.mkdir()
        for i in range(16):
            tiny_face(i).save(faces / f"{i}.jpg", quality=90)
    (root / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        os.link(faces / f"{i % 16}.jpg", root / "img_align_celeba" / name)
    values = np.where(np.random.default_rng(0).random((n, 40)) < 0.3, 1, -1)
    rows = "".join(f"{name} " + " ".join(f"{v:2d}" for v in row) + "\n" for name, row in zip(names, values))
    (root / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + rows)
    splits = [0] * (n * 8 // 10) + [1] * (n // 10) + [2] * (n - n * 8 // 10 - n // 10)
    (root / "list_eval_partition.txt").write_text("".join(f"{name} {s}\n" for name, s in zip(names, splits)))
    return root


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set size from /proc")
def test_peak_memory_of_tokenizing_stays_flat_as_the_folder_grows(tmp_path):
    """Each run is a fresh process that streams a CelebA-layout folder through `tokenize_dataset` (a FaceDataset,
    not load_images) at 64 px with a tiny VQ-VAE, in chunks of 256; its peak RSS growth during the call must not grow
    with the number of faces beyond the codes. Measured on a quiet machine: 29-38 MB for both 500 and 4,000 faces
    (the difference: -4 to +4 MB; one CI run saw +10 MB between 500 and 2,000, so the allowance is 16 MiB); an encoder
    that kept the decoded faces as uint8 grew by 35 MB more for the 3,500 extra faces."""
    import subprocess
    import sys

    runs = {}
    for n in (500, 4000):  # two fresh processes, side by side
        env = {**os.environ, "FACEGEN_DATA": str(celeba_folder(tmp_path / f"celeba{n}", n)),
               "FACEGEN_ARTIFACTS": str(tmp_path / f"artifacts{n}")}
        runs[n] = subprocess.Popen([sys.executable, "-c", PEAK_RSS_SCRIPT, str(n)], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    growth = {}
    for n, run in runs.items():
        out, err = run.communicate(timeout=600)
        results = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
        assert run.returncode == 0 and len(results) == 1, out[-1000:] + err[-2000:]
        assert results[0]["faces"] == n
        growth[n] = results[0]["growth"]
    codes = (4000 - 500) * 8 * 8 * 2  # the extra faces' codes: 8x8 int16 at 64 px
    decoded = (4000 - 500) * 3 * 64 * 64  # what holding the extra faces' crops as uint8 would take: 41 MiB
    assert growth[4000] - growth[500] < codes + 16 * 2**20 < decoded, growth  # 16 MiB: room for allocator noise
    assert growth[4000] < 200 * 2**20, growth
