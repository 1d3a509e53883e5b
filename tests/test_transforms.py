"""Face crop, resize and scaling: exact values, exact box, exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facegen.data.transforms import FACE_BOX, face_transform, from_uint8, to_pil, to_uint8, to_unit


def test_face_box_is_a_centred_square_of_the_aligned_image():
    left, top, right, bottom = FACE_BOX
    assert right - left == bottom - top == 178
    assert (left, right) == (0, 178) and top == 218 - bottom  # full width, centred vertically


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (10, 128, 250)])
def test_constant_colour_maps_to_exact_value(colour):
    x = face_transform(128)(Image.new("RGB", (178, 218), colour))
    assert x.dtype == torch.float32 and x.shape == (3, 128, 128)
    for channel, value in enumerate(colour):
        assert x[channel].unique().numel() == 1  # resizing a constant image keeps it constant
        # 2c/255 - 1, computed in double precision; float32 is within one rounding step of it.
        assert abs(x[channel, 0, 0].item() - (2 * value / 255 - 1)) < 1e-7, (channel, value)


def test_crop_takes_exactly_the_box():
    # Red outside the box, green inside: at full size (no resize) every pixel must be green, so a box that is off
    # by even one row or column would show red on that edge.
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[..., 0] = 255
    left, top, right, bottom = FACE_BOX
    pixels[top:bottom, left:right] = (0, 255, 0)
    image = Image.fromarray(pixels)
    full = face_transform(178, scale=False)(image)
    assert full.dtype == torch.uint8 and full.shape == (3, 178, 178)
    assert torch.equal(full, torch.tensor([0, 255, 0], dtype=torch.uint8)[:, None, None].expand(3, 178, 178))
    # Cropping happens before resizing: the 128 px face has no red bleeding in from outside the box.
    small = face_transform(128)(image)
    assert torch.equal(small, torch.tensor([-1.0, 1.0, -1.0])[:, None, None].expand(3, 128, 128))


def test_resize_is_antialiased():
    # A one-pixel checkerboard shrunk 178 -> 128 must average to grey; nearest-neighbour sampling would alias to
    # far-from-grey values.
    checker = ((np.indices((218, 178)).sum(axis=0) % 2) * 255).astype(np.uint8)
    x = face_transform(128, scale=False)(Image.fromarray(np.stack([checker] * 3, axis=-1)))
    inner = x[:, 4:-4, 4:-4].float()  # borders see the edge padding
    assert (inner - 127.5).abs().max() < 40


def test_transform_rejects_an_image_that_is_not_aligned_celeba():
    with pytest.raises(ValueError, match=r"expected an aligned CelebA image of 178x218 .*got 128x128"):
        face_transform(128)(Image.new("RGB", (128, 128)))


def test_from_uint8_endpoints_and_midpoint():
    x = from_uint8(torch.tensor([0, 255, 51], dtype=torch.uint8))
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]), rtol=0, atol=1e-7)


def test_from_uint8_rejects_floats():
    with pytest.raises(TypeError, match="expected a uint8 tensor, got torch.float32"):
        from_uint8(torch.zeros(3))


def test_uint8_round_trip_is_identity():
    every_value = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    assert torch.equal(to_uint8(from_uint8(every_value)), every_value)


def test_to_uint8_rounds_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0, 0.5 / 127.5 - 1 + 1e-4])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 1]  # 0.0 -> 127.5 rounds half to even: 128


def test_to_unit_maps_and_clamps():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    torch.testing.assert_close(to_unit(x), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))


def test_to_pil_shows_the_same_pixels():
    pixels = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    image = to_pil(from_uint8(pixels))
    assert image.mode == "RGB" and image.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(image), pixels.permute(1, 2, 0).numpy())


def test_to_pil_rejects_a_batch():
    with pytest.raises(ValueError, match=r"expected one image of shape \(3, H, W\), got \(2, 3, 4, 4\)"):
        to_pil(torch.zeros(2, 3, 4, 4))


def test_face_transform_matches_a_hand_made_pipeline(celeba):
    # Reference: PIL crop + PIL bicubic resize (antialiased), then x / 127.5 - 1.
    image = Image.open(celeba.root / "img_align_celeba" / "000004.jpg").convert("RGB")
    reference = np.asarray(image.crop(FACE_BOX).resize((64, 64), Image.BICUBIC)).astype(np.float32) / 127.5 - 1
    x = face_transform(64)(image)
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), reference)


def test_opponent_channels_by_hand_and_back():
    from facegen.data.transforms import from_opponent, to_opponent

    pixel = torch.tensor([0.5, -0.5, 0.1]).view(1, 3, 1, 1)
    torch.testing.assert_close(to_opponent(pixel).flatten(), torch.tensor([0.1 / 3, 1.0, -0.1]))
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(from_opponent(to_opponent(x)), x)
    assert to_opponent(x.to(torch.bfloat16)).dtype == torch.bfloat16  # the images' dtype, not fp32


def test_blur_colour_keeps_brightness_and_spreads_a_speck_of_colour():
    from facegen.data.transforms import blur_colour, to_opponent

    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    blurred = blur_colour(x, 4)
    torch.testing.assert_close(to_opponent(blurred)[:, 0], to_opponent(x)[:, 0])  # the grey level untouched
    flat = torch.tensor([0.2, -0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    torch.testing.assert_close(blur_colour(flat, 4), flat)  # flat colour stays
    speck = torch.zeros(1, 3, 16, 16)
    speck[0, 0, 6, 6], speck[0, 1, 6, 6] = 0.5, -0.5  # one red-green pixel on grey (its grey level: 0)
    colour = to_opponent(blur_colour(speck, 4))[:, 1]
    assert colour.abs().max() <= 1.0 / 16 + 1e-6  # red - green 1.0 averaged over its 4 x 4 block, then spread
    assert colour.sum().item() == pytest.approx(1.0, abs=1e-5)  # spread, not removed: the block's mean is kept
    from facegen import metrics
    assert metrics.chroma_detail(blur_colour(x, 4)) < metrics.chroma_detail(x)
    with pytest.raises(ValueError, match="divide the image size"):
        blur_colour(x, 3)
