"""SynthFaces: a procedural stand-in for CelebA, written in CelebA's own folder layout.

Each face is drawn with PIL from a 40-column CelebA attribute vector. The 18 `CONDITIONING_ATTRIBUTES` visibly change
the drawing (hair colour, hat, glasses, smile, beard, ...); the other 22 are written as -1. Attributes are sampled with
rates and correlations close to CelebA's (moustaches only on men, grey hair mostly on older faces, ...).

Everything about image `i` comes from `numpy.random.default_rng((seed, i))`, so a dataset is the same whatever the
number of workers or the order they run in. Faces are drawn at 2x and box-downsampled, so edges are antialiased.

    OUT/img_align_celeba/000001.jpg ...   178 x 218 RGB JPEGs
    OUT/list_attr_celeba.txt              count, the 40 names (trailing space, like the real file), one row per image
    OUT/list_eval_partition.txt           `000001.jpg 0` rows: 0 train / 1 valid / 2 test, contiguous 80/10/10
"""

from __future__ import annotations

import math
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from facegen.attributes import CELEBA_ATTRIBUTES, CELEBA_POSITIVE_PERCENT, CONDITIONING_ATTRIBUTES

WIDTH, HEIGHT = 178, 218  # CelebA's aligned crop size
SUPERSAMPLE = 2  # draw at 2x, then average 2x2 blocks: cheap antialiasing
JPEG_QUALITY = 95
IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train / valid / test, in contiguous ranges like CelebA's
SPLIT_NAMES = ("train", "valid", "test")
CHUNK = 50  # images per worker task

# Landmarks of CelebA's aligned crops, in output pixels.
CX = 89.0  # face centre line
EYE_Y, EYE_DX = 112.0, 19.0  # eyes at x ~ 70 and ~ 108
NOSE_Y, MOUTH_Y = 136.0, 152.0
TEMPLE_Y = 106.0  # widest line of the head
SKULL_TOP = 54.0  # top of a bald head; hair adds volume above it
POSE_CENTRE = np.array([CX, 120.0])

_NAME_RE = re.compile(r"^\d{6}\.jpg$")

# ---------------------------------------------------------------------------------------------------------- colours
SKIN_PALETTE = np.array([(247, 219, 200), (232, 188, 160), (200, 150, 115), (150, 102, 72), (100, 66, 48)], float)
PALE_SKIN = np.array((252, 240, 236), float)
HAIR_COLOURS = {
    "Black_Hair": np.array((28, 24, 24), float),
    "Blond_Hair": np.array((232, 200, 120), float),
    "Brown_Hair": np.array((112, 70, 40), float),
    "Gray_Hair": np.array((188, 188, 192), float),
}
OTHER_HAIR = np.array([(160, 62, 30), (196, 110, 58), (82, 44, 36)], float)  # auburn, ginger, dark auburn
EYE_COLOURS = np.array([(80, 50, 30), (50, 35, 25), (70, 110, 150), (80, 120, 70), (120, 90, 50)], float)
LIPSTICK = np.array([(196, 24, 44), (214, 50, 100), (150, 24, 64), (224, 82, 72)], float)
METALS = np.array([(225, 185, 60), (205, 205, 215)], float)
FRAMES = np.array([(20, 20, 20), (90, 50, 30), (150, 150, 160), (40, 40, 110)], float)


def _rgb(colour, alpha: float | None = None) -> tuple[int, ...]:
    """A PIL colour tuple from a float RGB array (and an optional 0..1 alpha)."""
    rgb = tuple(int(round(v)) for v in np.clip(colour, 0, 255))
    return rgb if alpha is None else rgb + (int(round(255 * alpha)),)


def _mix(a, b, t: float) -> np.ndarray:
    return np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t


# ------------------------------------------------------------------------------------------------------- attributes
# P(attribute | female), P(attribute | male): chosen so the marginals match CELEBA_POSITIVE_PERCENT.
_BY_SEX = {
    "Young": (0.85, 0.67),
    "Eyeglasses": (0.04, 0.10),
    "Pale_Skin": (0.06, 0.02),
    "Rosy_Cheeks": (0.105, 0.01),
    "Wearing_Earrings": (0.30, 0.035),
    "Wearing_Lipstick": (0.80, 0.01),
    "Bangs": (0.215, 0.095),
}
# Hair colour among the not-grey, by sex: the rest is "other" (red, auburn), which CelebA leaves unlabelled.
_HAIR_BY_SEX = {"Black_Hair": (0.22, 0.28), "Blond_Hair": (0.24, 0.035), "Brown_Hair": (0.22, 0.20)}


def sample_attributes(rng: np.random.Generator) -> dict[str, int]:
    """All 40 CelebA names -> 1 / -1, with CelebA-like rates and correlations; unrendered attributes are -1.

    Always draws the same number of random numbers, so whatever is drawn from `rng` afterwards does not depend on
    which attributes came out."""
    u = rng.random(16)
    on: dict[str, bool] = {}
    male = on["Male"] = bool(u[0] < 0.417)
    sex = int(male)
    on["Young"] = bool(u[1] < _BY_SEX["Young"][sex])
    on["Bald"] = male and bool(u[2] < (0.02 if on["Young"] else 0.12))
    on["Wearing_Hat"] = not on["Bald"] and bool(u[3] < 0.05)
    on["Bangs"] = not (on["Bald"] or on["Wearing_Hat"]) and bool(u[4] < _BY_SEX["Bangs"][sex])
    # At most one hair colour: grey mostly when old, otherwise black / blond / brown / none-of-these.
    on["Gray_Hair"] = bool(u[5] < (0.008 if on["Young"] else 0.16))
    threshold = 0.0
    for name, rates in _HAIR_BY_SEX.items():
        on[name] = not on["Gray_Hair"] and threshold <= u[6] < threshold + rates[sex]
        threshold += rates[sex]
    on["Eyeglasses"] = bool(u[7] < _BY_SEX["Eyeglasses"][sex])
    on["Smiling"] = bool(u[8] < 0.482)
    on["Mouth_Slightly_Open"] = bool(u[9] < (0.70 if on["Smiling"] else 0.27))
    beard = male and bool(u[10] < 0.38)
    on["Mustache"] = beard and bool(u[11] < 0.25)  # a moustache comes with a beard here
    on["No_Beard"] = not beard
    for k, name in enumerate(("Pale_Skin", "Rosy_Cheeks", "Wearing_Earrings", "Wearing_Lipstick")):
        on[name] = bool(u[12 + k] < _BY_SEX[name][sex])
    return {name: 1 if on.get(name, False) else -1 for name in CELEBA_ATTRIBUTES}


def _check_attributes(attributes: dict[str, int]) -> None:
    unknown = sorted(set(attributes) - set(CELEBA_ATTRIBUTES))
    missing = [name for name in CONDITIONING_ATTRIBUTES if name not in attributes]
    bad = {k: v for k, v in attributes.items() if v not in (1, -1)}
    if unknown or missing or bad:
        raise ValueError(
            "render_face: attributes must map CelebA names to 1 or -1 and include every conditioning attribute; "
            f"unknown names {unknown}, missing {missing}, values not 1/-1 {bad}")


# ------------------------------------------------------------------------------------------------------------ style
@dataclass(frozen=True)
class _Style:
    """Everything random about a face that is not an attribute (always drawn in full, in a fixed order)."""

    skin: np.ndarray
    half_width: float
    chin_y: float
    eye_dx: float
    eye_colour: np.ndarray
    eye_size: float
    brow_lift: float
    hair_jitter: np.ndarray
    other_hair: np.ndarray
    hair_volume: float
    hair_variant: int
    parting: float
    hairline: float
    bang_y: float
    bang_slope: float
    hair_length: float
    wave: float
    mouth_width: float
    lipstick: np.ndarray
    nose_width: float
    glasses_round: bool
    glasses_dark: bool
    frame: np.ndarray
    hat_kind: int
    hat_colour: np.ndarray
    earring_hoop: bool
    metal: np.ndarray
    clothes: np.ndarray
    background: np.ndarray  # two colours
    bg_vertical: bool
    angle: float
    shift: np.ndarray
    scale: float
    brightness: float
    light: np.ndarray  # horizontal and vertical brightness gradient
    noise_sigma: float


def _sample_style(rng: np.random.Generator) -> _Style:
    t = rng.beta(1.3, 3.0) * (len(SKIN_PALETTE) - 1)  # skewed towards light skin, like CelebA
    k = min(int(t), len(SKIN_PALETTE) - 2)
    skin = _mix(SKIN_PALETTE[k], SKIN_PALETTE[k + 1], t - k) * rng.uniform(0.97, 1.03, 3)
    return _Style(
        skin=skin,
        half_width=rng.uniform(40.0, 44.0),
        chin_y=rng.uniform(172.0, 178.0),
        eye_dx=EYE_DX + rng.uniform(-1.0, 1.0),
        eye_colour=EYE_COLOURS[rng.integers(len(EYE_COLOURS))],
        eye_size=rng.uniform(0.92, 1.08),
        brow_lift=rng.uniform(-1.5, 1.5),
        hair_jitter=rng.uniform(0.85, 1.12, 3) * rng.uniform(0.9, 1.1),
        other_hair=OTHER_HAIR[rng.integers(len(OTHER_HAIR))],
        hair_volume=rng.uniform(3.0, 9.0),
        hair_variant=int(rng.integers(3)),
        parting=rng.choice([-0.45, 0.0, 0.45]),
        hairline=rng.uniform(70.0, 76.0),
        bang_y=rng.uniform(93.0, 97.0),
        bang_slope=rng.uniform(-4.0, 4.0),
        hair_length=rng.uniform(180.0, 214.0),
        wave=rng.uniform(0.0, 3.0) * (rng.random() < 0.5),
        mouth_width=rng.uniform(12.0, 14.5),
        lipstick=LIPSTICK[rng.integers(len(LIPSTICK))],
        nose_width=rng.uniform(5.0, 7.0),
        glasses_round=bool(rng.random() < 0.4),
        glasses_dark=bool(rng.random() < 0.2),
        frame=FRAMES[rng.integers(len(FRAMES))],
        hat_kind=int(rng.integers(3)),
        hat_colour=rng.uniform(20, 230, 3),
        earring_hoop=bool(rng.random() < 0.6),
        metal=METALS[rng.integers(len(METALS))],
        clothes=rng.uniform(20, 230, 3),
        background=rng.uniform(40, 245, (2, 3)),
        bg_vertical=bool(rng.random() < 0.5),
        angle=rng.uniform(-6.0, 6.0),
        shift=rng.uniform(-4.0, 4.0, 2),
        scale=rng.uniform(0.94, 1.06),
        brightness=rng.uniform(0.88, 1.1),
        light=rng.uniform(-0.12, 0.12, 2),
        noise_sigma=rng.uniform(1.5, 4.0),
    )


# ----------------------------------------------------------------------------------------------------------- canvas
_CIRCLE = np.linspace(0, 2 * np.pi, 48, endpoint=False)


class _Canvas:
    """ImageDraw in output-pixel coordinates, through the face's pose (rotation, scale, shift) and the supersampling.

    Every shape is a polygon or polyline, so a rotated ellipse is just a transformed list of points."""

    def __init__(self, image: Image.Image, style: _Style):
        self.draw = ImageDraw.Draw(image, "RGBA")  # RGBA fills blend onto the RGB image
        a = math.radians(style.angle)
        s = style.scale * SUPERSAMPLE
        self.matrix = np.array([[s * math.cos(a), -s * math.sin(a)], [s * math.sin(a), s * math.cos(a)]])
        self.offset = SUPERSAMPLE * (POSE_CENTRE + style.shift) - self.matrix @ POSE_CENTRE
        self.pixel = s  # one output pixel, in canvas pixels

    def _map(self, points) -> list[float]:
        return (np.asarray(points, float) @ self.matrix.T + self.offset).ravel().tolist()

    def polygon(self, points, fill) -> None:
        self.draw.polygon(self._map(points), fill=fill)

    def line(self, points, fill, width: float) -> None:
        self.draw.line(self._map(points), fill=fill, width=max(1, int(round(width * self.pixel))), joint="curve")

    def ellipse(self, cx, cy, rx, ry, fill, angle: float = 0.0) -> None:
        self.polygon(_ellipse_points(cx, cy, rx, ry, angle), fill)


def _ellipse_points(cx, cy, rx, ry, angle: float = 0.0, t=_CIRCLE) -> np.ndarray:
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _bezier(*control, n: int = 16) -> np.ndarray:
    """Points on a Bezier curve through the given control points (quadratic or cubic)."""
    p = np.asarray(control, float)
    t = np.linspace(0, 1, n)[:, None]
    while len(p) > 1:  # de Casteljau: blend neighbours until one curve is left
        p = np.stack([(1 - t) * p[i] + t * p[i + 1] for i in range(len(p) - 1)])
    return p[0]


def _mirror(points) -> np.ndarray:
    """The same shape on the other side of the face's centre line."""
    p = np.array(points, float)
    p[:, 0] = 2 * CX - p[:, 0]
    return p


# ------------------------------------------------------------------------------------------------------------- face
@dataclass(frozen=True)
class _Look:
    """Attribute-derived drawing decisions, gathered so each drawing step reads like the attribute it renders."""

    on: dict
    skin: np.ndarray
    hair: np.ndarray
    male: bool


def _look(attributes: dict[str, int], style: _Style) -> _Look:
    on = {name: attributes.get(name, -1) == 1 for name in CELEBA_ATTRIBUTES}
    skin = style.skin
    if on["Pale_Skin"]:
        skin = _mix(skin, PALE_SKIN, 0.6)
    if not on["Young"]:  # older skin: greyer, a little darker
        skin = _mix(skin, np.full(3, skin.mean()), 0.3) * 0.94
    hair = style.other_hair
    for name, colour in HAIR_COLOURS.items():
        if on[name]:
            hair = colour
    hair = np.clip(hair * style.hair_jitter, 0, 255)
    return _Look(on=on, skin=skin, hair=hair, male=on["Male"])


def _jaw_power(look: _Look) -> float:
    return 2.7 if look.male else 1.9  # superellipse exponent: square jaw vs a softer, narrower chin


def _half_width(look: _Look, style: _Style) -> float:
    return style.half_width + (2.0 if look.male else 0.0)


def _head_outline(look: _Look, style: _Style) -> np.ndarray:
    """Skull (upper half ellipse) joined to the jaw (a superellipse quadrant each side), clockwise from the top."""
    w = _half_width(look, style)
    top = np.linspace(np.pi, 2 * np.pi, 25)  # left -> over the top -> right
    skull = np.stack([CX + w * np.cos(top), TEMPLE_Y + (TEMPLE_Y - SKULL_TOP) * np.sin(top)], axis=1)
    t = np.linspace(0, np.pi / 2, 20)
    e = 2.0 / _jaw_power(look)
    depth = style.chin_y - TEMPLE_Y
    right = np.stack([CX + w * np.cos(t) ** e, TEMPLE_Y + depth * np.sin(t) ** e], axis=1)
    return np.concatenate([skull, right, _mirror(right)[::-1]])


def _draw_background(style: _Style) -> Image.Image:
    ramp = np.linspace(0, 1, HEIGHT if style.bg_vertical else WIDTH, dtype=np.float32)
    ramp = ramp[:, None, None] if style.bg_vertical else ramp[None, :, None]
    a, b = style.background.astype(np.float32)
    bg = np.broadcast_to(a * (1 - ramp) + b * ramp, (HEIGHT, WIDTH, 3))
    small = Image.fromarray(np.ascontiguousarray(bg).astype(np.uint8))
    return small.resize((WIDTH * SUPERSAMPLE, HEIGHT * SUPERSAMPLE), Image.BILINEAR)


def _draw_body(c: _Canvas, look: _Look, style: _Style) -> None:
    c.ellipse(CX, 252, 82, 54, _rgb(style.clothes))
    neck = 19.0 if look.male else 16.0
    c.polygon([(CX - neck, 140), (CX + neck, 140), (CX + neck + 3, 205), (CX - neck - 3, 205)], _rgb(look.skin * 0.86))
    c.ellipse(CX, 202, neck + 3, 6, _rgb(look.skin * 0.86))  # rounded neckline


def _draw_back_hair(c: _Canvas, look: _Look, style: _Style) -> None:
    """Hair behind the head: shoulder-length or a bob for women, a short back-of-head volume for men."""
    if look.on["Bald"]:
        return
    w = _half_width(look, style)
    vol = style.hair_volume
    rx, ry = w + vol * 0.6, TEMPLE_Y - SKULL_TOP + vol
    top = np.linspace(np.pi, 2 * np.pi, 25)
    arc = np.stack([CX + rx * np.cos(top), TEMPLE_Y + ry * np.sin(top)], axis=1)
    if look.male:
        side = np.array([(CX + rx, TEMPLE_Y), (CX + rx - 3, 124), (CX + w - 8, 130)])
        c.polygon(np.concatenate([arc, side, _mirror(side)[::-1]]), _rgb(look.hair * 0.85))
        return
    bottom = style.hair_length if style.hair_variant != 2 else 158.0  # variant 2 is a chin-length bob
    ys = np.linspace(TEMPLE_Y, bottom, 12)
    flare = (ys - TEMPLE_Y) / (bottom - TEMPLE_Y)
    xs = CX + rx + 6 * flare + style.wave * np.sin(ys / 7.0)
    side = np.concatenate([np.stack([xs, ys], axis=1), [(CX + 12, bottom - 6)]])
    c.polygon(np.concatenate([arc, side, _mirror(side)[::-1]]), _rgb(look.hair * 0.88))


def _draw_ears(c: _Canvas, look: _Look, style: _Style) -> None:
    w = _half_width(look, style)
    for sign in (-1, 1):
        c.ellipse(CX + sign * (w - 1), 117, 6, 11.5, _rgb(look.skin * 0.95), angle=sign * 8)
        c.ellipse(CX + sign * (w + 0.5), 117, 3, 7, _rgb(look.skin * 0.78), angle=sign * 8)


def _draw_head(c: _Canvas, look: _Look, style: _Style) -> None:
    c.polygon(_head_outline(look, style), _rgb(look.skin))
    # Soft shadow under the cheekbones, highlights on forehead: a little volume.
    w = _half_width(look, style)
    c.ellipse(CX, 95, w * 0.6, 18, _rgb((255, 255, 255), 0.06))


def _draw_age_lines(c: _Canvas, look: _Look, style: _Style) -> None:
    """Wrinkles of an older face: forehead, crow's feet, bags under the eyes, nose-to-mouth folds."""
    if look.on["Young"]:
        return
    ink = _rgb(look.skin * 0.7)
    w = style.mouth_width
    for y in (80.0, 86.0, 92.0):
        c.line(_bezier((CX - 20, y + 1.5), (CX, y - 1.5), (CX + 20, y + 1.5)), ink, 1.0)
    for sign in (-1, 1):
        ex = CX + sign * style.eye_dx
        side = lambda pts: pts if sign > 0 else _mirror(pts)  # noqa: E731 - a one-line reflection
        for dy in (-3.0, 0.0, 3.0):
            c.line(side([(CX + style.eye_dx + 10, EYE_Y + dy * 0.4), (CX + style.eye_dx + 15, EYE_Y + dy)]), ink, 0.9)
        c.line(_bezier((ex - 6, EYE_Y + 6), (ex, EYE_Y + 9.5), (ex + 6, EYE_Y + 6)), ink, 1.0)
        c.line(side(_bezier((CX + 9, NOSE_Y - 3), (CX + w + 6, NOSE_Y + 6), (CX + w + 3, MOUTH_Y + 5))), ink, 1.3)
        c.line(side([(CX + w + 1, MOUTH_Y + 4), (CX + w + 2, MOUTH_Y + 14)]), ink, 1.0)


def _draw_cheeks(c: _Canvas, look: _Look, style: _Style) -> None:
    if not look.on["Rosy_Cheeks"]:
        return
    for sign in (-1, 1):
        for r in (11.0, 8.5, 6.0, 3.5):  # stacked translucent discs: a soft blush
            c.ellipse(CX + sign * 23, 138, r, r * 0.75, (235, 70, 90, 45))


def _draw_eyes(c: _Canvas, look: _Look, style: _Style) -> None:
    rx, ry = 7.5 * style.eye_size, (3.6 if look.male else 4.2) * style.eye_size
    lid = _rgb(look.skin * 0.35) if not look.male else _rgb(look.skin * 0.5)
    for sign in (-1, 1):
        ex = CX + sign * style.eye_dx
        upper = _bezier((ex - rx, EYE_Y), (ex, EYE_Y - 2 * ry), (ex + rx, EYE_Y))
        lower = _bezier((ex + rx, EYE_Y), (ex, EYE_Y + 1.6 * ry), (ex - rx, EYE_Y))
        c.polygon(np.concatenate([upper, lower]), (245, 242, 238))
        c.ellipse(ex, EYE_Y + 0.3, 3.4, 3.4, _rgb(style.eye_colour))
        c.ellipse(ex, EYE_Y + 0.3, 1.6, 1.6, (15, 10, 10))
        c.ellipse(ex + 1.0, EYE_Y - 0.9, 0.7, 0.7, (255, 255, 255))
        c.line(upper, lid, 1.0 if look.male else 1.7)  # women: a heavier lash line


def _brow_colour(look: _Look) -> np.ndarray:
    if look.on["Blond_Hair"] or look.on["Gray_Hair"]:
        return look.hair * 0.7
    return look.hair * 0.8


def _draw_brows(c: _Canvas, look: _Look, style: _Style) -> None:
    y = 101.0 - style.brow_lift
    width = 3.6 if look.male else 2.0
    arch = 3.0 if not look.male else 1.5
    for sign in (-1, 1):
        ex = CX + sign * style.eye_dx
        pts = _bezier((ex - sign * 9, y + 1.5), (ex - sign * 1, y - arch - 1), (ex + sign * 10, y + 1.5), n=10)
        c.line(pts, _rgb(_brow_colour(look)), width)


def _draw_nose(c: _Canvas, look: _Look, style: _Style) -> None:
    nw = style.nose_width
    shade = _rgb(look.skin * 0.82)
    c.line(_bezier((CX + 3, 116), (CX + 5, 126), (CX + 4, NOSE_Y - 3)), shade, 1.3)
    c.line(_bezier((CX - nw, NOSE_Y), (CX, NOSE_Y + 4), (CX + nw, NOSE_Y)), shade, 1.2)
    for sign in (-1, 1):
        c.ellipse(CX + sign * nw * 0.55, NOSE_Y + 0.8, 1.8, 1.1, _rgb(look.skin * 0.5))


def _mouth_line(look: _Look, style: _Style, n: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """x positions and the y of the lips' meeting line; a smile lifts the corners and widens the mouth."""
    w = style.mouth_width + (3.0 if look.on["Smiling"] else 0.0)
    u = np.linspace(-1, 1, n)
    curve = 4.5 if look.on["Smiling"] else 0.6  # how much lower the centre sits than the corners
    return CX + w * u, MOUTH_Y - curve + curve * (1 - u ** 2)


def _draw_mouth(c: _Canvas, look: _Look, style: _Style) -> None:
    xs, ys = _mouth_line(look, style)
    u = np.linspace(-1, 1, len(xs))
    bulge = np.sqrt(1 - u ** 2)
    upper_t, lower_t = (2.6, 3.6) if look.male else (3.2, 4.6)
    opening = 0.0
    if look.on["Mouth_Slightly_Open"]:
        opening = 6.0 if look.on["Smiling"] else 4.5
    lips = _rgb(style.lipstick if look.on["Wearing_Lipstick"] else _mix(look.skin, (175, 75, 80), 0.45))
    top_edge = np.stack([xs, ys - upper_t * bulge - 0.8 * np.cos(u * 2 * np.pi) * bulge], axis=1)
    seam = np.stack([xs, ys], axis=1)
    low_seam = np.stack([xs, ys + opening * bulge], axis=1)
    bottom_edge = np.stack([xs, ys + opening * bulge + lower_t * bulge], axis=1)
    if opening:
        c.polygon(np.concatenate([seam, low_seam[::-1]]), (70, 22, 28))
        if look.on["Smiling"]:
            teeth = np.stack([xs, ys + opening * 0.45 * bulge], axis=1)
            c.polygon(np.concatenate([seam[2:-2], teeth[2:-2][::-1]]), (240, 238, 228))
    c.polygon(np.concatenate([top_edge, seam[::-1]]), lips)
    c.polygon(np.concatenate([low_seam, bottom_edge[::-1]]), lips)
    c.line(seam if not opening else low_seam, _rgb(_mix(lips, (40, 10, 10), 0.5)), 0.8)


def _facial_hair_colour(look: _Look) -> np.ndarray:
    return look.hair * 0.8


def _draw_beard(c: _Canvas, look: _Look, style: _Style) -> None:
    """No_Beard = -1: a full beard along the jaw, leaving the lips free."""
    if look.on["No_Beard"]:
        return
    w = _half_width(look, style)
    outline = _head_outline(look, style)
    jaw = outline[(outline[:, 1] >= 124)]
    jaw = jaw + np.where(jaw[:, 1:] > 150, [[0, 2.5]], [[0, 0]])  # beard volume under the chin
    mw = style.mouth_width + 4
    inner = np.concatenate([
        _bezier((CX - w + 5, 124), (CX - mw - 2, 132), (CX - mw, MOUTH_Y + 2), n=8),
        _bezier((CX - mw, MOUTH_Y + 2), (CX, MOUTH_Y + 16), (CX + mw, MOUTH_Y + 2), n=10),
        _bezier((CX + mw, MOUTH_Y + 2), (CX + mw + 2, 132), (CX + w - 5, 124), n=8),
    ])
    colour = _facial_hair_colour(look)
    c.polygon(np.concatenate([jaw, inner[::-1]]), _rgb(colour))


def _draw_mustache(c: _Canvas, look: _Look, style: _Style) -> None:
    if not look.on["Mustache"]:
        return
    xs, ys = _mouth_line(look, style, n=9)
    half = np.stack([xs, ys - 2.5], axis=1)
    top = np.stack([xs, ys - 8.5 + 2.0 * np.abs(np.linspace(-1, 1, len(xs))) ** 2], axis=1)
    tips = [(xs[-1] + 2, ys[-1] + 3), (xs[0] - 2, ys[0] + 3)]
    c.polygon(np.concatenate([top, [tips[0]], half[::-1], [tips[1]]]), _rgb(_facial_hair_colour(look) * 0.9))


def _hairline(look: _Look, style: _Style) -> np.ndarray:
    """Where the hair meets the forehead, left temple to right temple (bangs: a ragged fringe above the brows)."""
    w = _half_width(look, style)
    u = np.linspace(-1, 1, 33)
    if look.on["Bangs"]:
        y = style.bang_y + style.bang_slope * u + 1.8 * np.abs(np.sin(u * 9 * np.pi / 2))
        front = np.stack([CX + u * (w - 1), y], axis=1)
        return np.concatenate([[(CX - w + 1, 108)], front, [(CX + w - 1, 108)]])
    high = style.hairline - (5.0 if look.male and not look.on["Young"] else 0.0)  # receding with age
    y = high + 12 * u ** 4 - 4.5 * np.exp(-((u - style.parting) / 0.1) ** 2)
    front = np.stack([CX + u * (w - 8), y], axis=1)
    side_low = 112.0 if look.male else 108.0  # men: a short sideburn in front of the ear
    return np.concatenate([[(CX - w + 1, side_low), (CX - w + 4, 92)], front, [(CX + w - 4, 92), (CX + w - 1, side_low)]])


def _draw_front_hair(c: _Canvas, look: _Look, style: _Style) -> None:
    """The hair over the top of the head, down to the hairline (or the fringe)."""
    if look.on["Bald"]:
        return
    w = _half_width(look, style)
    vol = style.hair_volume * (0.7 if look.male else 1.0)
    rx, ry = w + 1.5 + vol * 0.5, TEMPLE_Y - SKULL_TOP + vol
    top = np.linspace(2 * np.pi + 0.08, np.pi - 0.08, 29)  # right -> over the top -> left
    arc = np.stack([CX + rx * np.cos(top), TEMPLE_Y + ry * np.sin(top)], axis=1)
    c.polygon(np.concatenate([arc, _hairline(look, style)]), _rgb(look.hair))
    # A few strands and a sheen, so hair reads as hair.
    dark, light = _rgb(look.hair * 0.72), _rgb(_mix(look.hair, (255, 255, 255), 0.25))
    px = CX + style.parting * (w - 8)
    for k in (-2, -1, 1, 2):
        end_x = CX + k * (w - 4) / 2.2
        c.line(_bezier((px, TEMPLE_Y - ry + 6), (end_x, 60), (end_x + k * 3, 84)), dark, 0.9)
    c.line(_bezier((CX - 14, TEMPLE_Y - ry + 7), (CX, TEMPLE_Y - ry + 3), (CX + 14, TEMPLE_Y - ry + 7)), light, 2.0)


def _draw_bald_head(c: _Canvas, look: _Look, style: _Style) -> None:
    """Bald: a shine on the scalp and a short fringe of hair above the ears."""
    if not look.on["Bald"]:
        return
    c.ellipse(CX - 8, 66, 14, 6, (255, 255, 255, 70), angle=-15)
    w = _half_width(look, style)
    side = np.array([(CX + w - 4, 94), (CX + w + 1.5, 96), (CX + w + 1.5, 113), (CX + w - 2, 110)])
    for pts in (side, _mirror(side)):
        c.polygon(pts, _rgb(look.hair))


def _draw_earrings(c: _Canvas, look: _Look, style: _Style) -> None:
    if not look.on["Wearing_Earrings"]:
        return
    w = _half_width(look, style)
    metal = _rgb(style.metal)
    for sign in (-1, 1):
        x = CX + sign * (w + 0.5)
        c.ellipse(x, 128, 1.8, 1.8, metal)
        if style.earring_hoop:
            c.line(_ellipse_points(x, 134.5, 5.0, 6.0, t=np.linspace(0, 2 * np.pi, 25)), metal, 1.7)
        else:
            c.line([(x, 128), (x, 135)], metal, 1.0)
            c.ellipse(x, 137.5, 2.8, 3.6, metal)


def _draw_glasses(c: _Canvas, look: _Look, style: _Style) -> None:
    if not look.on["Eyeglasses"]:
        return
    frame = _rgb(style.frame)
    t = np.linspace(0, 2 * np.pi, 33)
    power = 2.0 if style.glasses_round else 4.0  # round or rounded-rectangle lenses
    e = 2.0 / power
    w = _half_width(look, style)
    lens = (30, 30, 40, 215) if style.glasses_dark else (200, 225, 255, 40)
    for sign in (-1, 1):
        ex = CX + sign * style.eye_dx
        pts = np.stack([ex + 12 * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** e,
                        EYE_Y + 0.5 + 9 * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** e], axis=1)
        c.polygon(pts, lens)
        c.line(pts, frame, 2.0)
        c.line([(ex + sign * 12, EYE_Y - 3), (CX + sign * (w - 1), EYE_Y - 4)], frame, 1.8)
    c.line(_bezier((CX - style.eye_dx + 11.5, EYE_Y - 2), (CX, EYE_Y - 5), (CX + style.eye_dx - 11.5, EYE_Y - 2)),
           frame, 1.8)


def _draw_hat(c: _Canvas, look: _Look, style: _Style) -> None:
    """A beanie, a cap or a wide-brimmed hat over the top of the head; the hair shows only below it."""
    if not look.on["Wearing_Hat"]:
        return
    w = _half_width(look, style) + 4
    colour, dark = _rgb(style.hat_colour), _rgb(style.hat_colour * 0.7)
    top = np.linspace(np.pi, 2 * np.pi, 25)
    if style.hat_kind == 0:  # beanie with a folded band
        c.polygon(np.stack([CX + w * np.cos(top), 88 + 44 * np.sin(top)], axis=1), colour)
        c.polygon([(CX - w - 1, 78), (CX + w + 1, 78), (CX + w + 1, 92), (CX - w - 1, 92)], dark)
        for x in np.linspace(CX - w + 4, CX + w - 4, 9):
            c.line([(x, 80), (x, 90)], colour, 0.8)
    elif style.hat_kind == 1:  # cap with a brim
        c.polygon(np.stack([CX + w * np.cos(top), 86 + 42 * np.sin(top)], axis=1), colour)
        brim = np.linspace(0, np.pi, 17)
        c.polygon(np.stack([CX + (w + 4) * np.cos(brim), 84 + 10 * np.sin(brim)], axis=1), dark)
        c.ellipse(CX, 45, 3, 2, dark)
    else:  # wide brim
        c.ellipse(CX, 82, w + 26, 9, dark)
        c.polygon([(CX - w + 6, 82), (CX - w + 9, 46), (CX, 41), (CX + w - 9, 46), (CX + w - 6, 82)], colour)
        c.polygon([(CX - w + 6.5, 72), (CX + w - 6.5, 72), (CX + w - 6, 80), (CX - w + 6, 80)], dark)


_LAYERS = (_draw_body, _draw_back_hair, _draw_ears, _draw_head, _draw_age_lines, _draw_cheeks, _draw_nose,
           _draw_eyes, _draw_brows, _draw_beard, _draw_mouth, _draw_mustache, _draw_front_hair, _draw_bald_head,
           _draw_earrings, _draw_glasses, _draw_hat)


def _finish(image: Image.Image, style: _Style, rng: np.random.Generator) -> Image.Image:
    """Downsample, then light the scene (brightness and a gradient) and add a little sensor noise."""
    small = np.asarray(image.reduce(SUPERSAMPLE), dtype=np.float32)
    ys = np.linspace(-1, 1, HEIGHT, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, WIDTH, dtype=np.float32)[None, :]
    gain = style.brightness * (1 + style.light[0] * xs + style.light[1] * ys)
    noise = rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32) * style.noise_sigma
    out = small * gain[:, :, None] + noise[:, :, None]
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def render_face(attributes: dict[str, int], rng: np.random.Generator) -> Image.Image:
    """Draw one 178x218 RGB face showing `attributes` (CelebA name -> 1/-1); `rng` supplies everything else.

    The random draws do not depend on the attributes, so two calls with generators in the same state and attributes
    that differ in one name give faces that differ only where that attribute is drawn."""
    _check_attributes(attributes)
    style = _sample_style(rng)
    look = _look(attributes, style)
    image = _draw_background(style)
    canvas = _Canvas(image, style)
    for layer in _LAYERS:
        layer(canvas, look, style)
    return _finish(image, style, rng)


def make_face(index: int, seed: int = 0) -> tuple[Image.Image, dict[str, int]]:
    """Image and attributes of SynthFaces image `index` (0-based): a function of (seed, index) only."""
    if index < 0 or seed < 0:
        raise ValueError(f"make_face: index and seed must be >= 0, got index={index}, seed={seed}")
    rng = np.random.default_rng((seed, index))
    attributes = sample_attributes(rng)
    return render_face(attributes, rng), attributes
