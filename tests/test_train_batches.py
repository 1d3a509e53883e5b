"""Streamed training data: a split decoded per batch (FaceImages, DataLoader workers) gives exactly the batches, and so
the same trained model, as the same split held in memory as one uint8 tensor."""

import pytest
import torch

from facegen.config import get_profile
from facegen.data.celeba import read_celeba
from facegen.data.dataset import FaceDataset, preload
from facegen.data.images import load_images
from facegen.data.streaming import FaceImages
from facegen.train.batches import step_batches
from facegen.train.schedule import batch_indices
from facegen.vqvae_training import train_vqvae

SIZE = 32


@pytest.fixture(scope="module")
def both(celeba_shared):
    """The same 10 faces, as a FaceImages (decoded on demand) and as preload's uint8 tensor."""
    faces = FaceDataset(read_celeba(celeba_shared.root), None, SIZE)
    return FaceImages(faces), preload(faces, progress=False)[0]


def test_face_images_index_like_the_tensor(both):
    streamed, tensor = both
    assert len(streamed) == len(tensor) == 10 and streamed.shape == tuple(tensor.shape)
    assert torch.equal(streamed[3], tensor[3])
    assert torch.equal(streamed[2:5], tensor[2:5])
    assert torch.equal(streamed[torch.tensor([7, 0, 7])], tensor[torch.tensor([7, 0, 7])])
    assert torch.equal(streamed[[1, 9]], tensor[[1, 9]])
    mask = torch.tensor([True, False] * 5)
    assert torch.equal(streamed[mask], tensor[mask])  # a mask selects, it is not read as indices 1 and 0
    with pytest.raises(IndexError, match="a mask of 3 for 10 faces"):
        streamed[torch.tensor([True, False, True])]
    assert streamed[5:5].shape == (0, 3, SIZE, SIZE)
    with pytest.raises(TypeError, match="FaceImages: index with"):
        streamed[1.5]


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_are_the_tensors_batches(both, workers):
    streamed, tensor = both
    got = list(step_batches(streamed, 3, 9, batch_size=4, seed=5, num_workers=workers))
    expected = list(step_batches(tensor, 3, 9, batch_size=4, seed=5))
    assert len(got) == len(expected) == 6
    for step, ((i, a), (j, b)) in enumerate(zip(got, expected), start=3):
        assert torch.equal(i, batch_indices(step, 10, 4, seed=5)) and torch.equal(i, j)
        assert a.dtype == torch.uint8 and torch.equal(a, b)


def test_step_batches_refuse_float_images():
    with pytest.raises(ValueError, match="uint8 tensor .* or a FaceImages; got torch.float32"):
        next(step_batches(torch.zeros(4, 3, 8, 8), 0, 1, 2, 0))


def test_a_vqvae_trained_on_a_streamed_split_equals_one_trained_on_the_tensor(both, tmp_path):
    streamed, tensor = both
    profile = get_profile("ci").replace(data={"image_size": SIZE}, vqvae={
        "codebook_size": 16, "embed_dim": 8, "hidden": 16, "n_res_blocks": 1, "batch_size": 4, "val_every": 2,
        "steps": 4, "restart_after": 2})
    a = train_vqvae(profile, streamed, streamed, folder=tmp_path / "streamed", progress=False)
    b = train_vqvae(profile, tensor, tensor, folder=tmp_path / "tensor", progress=False)
    assert a.validation == b.validation
    for key, value in b.model.state_dict().items():
        assert torch.equal(a.model.state_dict()[key], value), key


def test_load_images_streams_when_the_profile_says_so(celeba_shared, monkeypatch, tmp_path):
    monkeypatch.setenv("FACEGEN_DATA", str(celeba_shared.root))
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path))
    profile = get_profile("gpu").replace(data={"image_size": SIZE})
    images, attributes = load_images(profile, "train", attributes=True, progress=False)
    assert isinstance(images, FaceImages) and len(images) == 6 and attributes.shape == (6, 40)
    assert not (tmp_path / "gpu" / "cache").exists()  # nothing decoded into a tensor file
    in_memory = load_images(profile.replace(data={"stream": False}), "train", progress=False)
    assert torch.equal(images[0:6], in_memory)
    valid = load_images(profile, "valid", progress=False)  # small enough to hold: notebooks use it as a tensor
    assert torch.is_tensor(valid) and valid.shape == (2, 3, SIZE, SIZE)


def test_a_streamed_split_tokenizes_like_the_tensor(both):
    from facegen.tokenize_dataset import tokenize_split
    from facegen.vqvae import VQVAE

    streamed, tensor = both
    torch.manual_seed(0)
    vqvae = VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1).eval()
    assert streamed.ndim == tensor.ndim == 4
    assert torch.equal(tokenize_split(vqvae, streamed, batch_size=4, progress=False),
                       tokenize_split(vqvae, tensor, batch_size=4, progress=False))
