import json

import pytest
import torch

from facegen.vqvae import VQVAE


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1).eval()


def test_encode_indices_is_the_nearest_code_of_the_encoder_output(model):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    indices = model.encode_indices(x)
    assert indices.shape == (2, 4, 4) and indices.dtype == torch.long
    z = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, 8)
    brute = torch.cdist(z, model.quantizer.codebook.detach()).argmin(dim=1)
    assert torch.equal(indices.flatten(), brute)


def test_decode_of_encode_equals_the_forward_reconstruction(model):
    x = torch.rand(3, 3, 128, 128) * 2 - 1
    indices = model.encode_indices(x)
    assert indices.shape == (3, 16, 16)
    with torch.no_grad():
        recon, vq = model(x)
    assert torch.equal(vq.indices, indices)
    torch.testing.assert_close(model.decode_indices(indices), recon.clamp(-1, 1))
    assert model.decode_indices(indices).abs().max() <= 1


def test_save_and_load_pretrained_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "vq")
    config = json.loads((tmp_path / "vq" / "config.json").read_text())
    assert config["codebook_size"] == 16 and config["hidden"] == 16
    assert (tmp_path / "vq" / "model.safetensors").is_file()
    loaded = VQVAE.from_pretrained(tmp_path / "vq").eval()
    indices = torch.randint(0, 16, (1, 4, 4))
    assert torch.equal(loaded.decode_indices(indices), model.decode_indices(indices))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 1, 32, 32), r"\(B, 3, H, W\)"),
    (torch.zeros(2, 3, 30, 30), "multiples of 8"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "float in"),
])
def test_bad_images_get_one_clear_error(model, bad, message):
    with pytest.raises(ValueError, match=message):
        model.encode_indices(bad)


def test_bad_indices_get_one_clear_error(model):
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        model.decode_indices(torch.full((1, 4, 4), 16))
    with pytest.raises(ValueError, match="integer tensor"):
        model.decode_indices(torch.zeros(1, 4, 4))


def test_layer_summary_lists_every_layer_with_its_output_shape(model):
    from facegen.vqvae import layer_summary

    rows = layer_summary(model, image_size=128)
    names = [r[0] for r in rows]
    assert names[0] == "encoder.0" and "quantizer" in names and names[-1].startswith("decoder.")
    shapes = dict((r[0], r[2]) for r in rows)
    assert shapes["encoder.0"] == (1, 8, 64, 64)  # hidden // 2 channels after the first stride-2 conv
    assert shapes["quantizer"] == (1, 8, 16, 16)  # embed_dim x 16 x 16
    assert rows[-1][2] == (1, 3, 128, 128)
    assert sum(r[3] for r in rows) == sum(p.numel() for p in model.parameters())
