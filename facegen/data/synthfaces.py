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
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw
from tqdm.auto import tqdm

from facegen.attributes import CELEBA_ATTRIBUTES, CELEBA_POSITIVE_PERCENT, CONDITIONING_ATTRIBUTES

WIDTH, HEIGHT = 178, 218  # CelebA's aligned crop size
SUPERSAMPLE = 2  # draw at 2x, then average 2x2 blocks: cheap antialiasing
JPEG_QUALITY = 95
IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
MARKER_FILE = ".facegen-synthfaces.json"  # written first: this folder is facegen's own, so facegen may rewrite it
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train / valid / test, in contiguous ranges like CelebA's
SPLIT_NAMES = ("train", "valid", "test")
CHUNK = 50  # images per worker task
NOISE_BANK = 512  # side of the shared noise texture

# Landmarks of CelebA's aligned crops, in output pixels.
CX = 89.0  # face centre line
EYE_Y, EYE_DX = 112.0, 19.0  # eyes at x ~ 70 and ~ 108
NOSE_Y, MOUTH_Y = 136.0, 152.0
TEMPLE_Y = 106.0  # widest line of the head
SKULL_TOP = 54.0  # top of a bald head; hair adds volume above it
POSE_CENTRE = np.array([CX, 120.0])

_NAME_RE = re.compile(r"^\d{6}\.jpg$")
_TMP_RE = re.compile(r"^\..+\.tmp\d+$")  # see _write_atomic

# ---------------------------------------------------------------------------------------------------------- colours
SKIN_PALETTE = np.array([(247, 219, 200), (232, 188, 160), (200, 150, 115), (150, 102, 72), (100, 66, 48)], float)
PALE_SKIN = np.array((252, 240, 236), float)
HAIR_COLOURS = {
    "Black_Hair": np.array((28, 24, 24), float),
    "Blond_Hair": np.array((232, 200, 120), float),
    "Brown_Hair": np.array((100, 64, 42), float),
    "Gray_Hair": np.array((188, 188, 192), float),
}
# Hair that is none of CelebA's four colours: reds, kept clearly apart from brown so the labels stay learnable.
OTHER_HAIR = np.array([(150, 48, 26), (200, 104, 48), (178, 72, 34)], float)  # auburn, ginger, copper
EYE_COLOURS = np.array([(80, 50, 30), (50, 35, 25), (70, 110, 150), (80, 120, 70), (120, 90, 50)], float)
LIPSTICK = np.array([(196, 24, 44), (214, 50, 100), (150, 24, 64), (224, 82, 72)], float)
METALS = np.array([(225, 185, 60), (205, 205, 215)], float)
FRAMES = np.array([(20, 20, 20), (90, 50, 30), (115, 115, 125), (40, 40, 110)], float)


def _rgb(colour, alpha: float | None = None) -> tuple[int, ...]:
    """A PIL colour tuple from a float RGB array (and an optional 0..1 alpha)."""
    rgb = tuple(int(min(255.0, max(0.0, float(v))) + 0.5) for v in colour)
    return rgb if alpha is None else rgb + (int(255 * alpha + 0.5),)


def _mix(a, b, t: float) -> np.ndarray:
    return np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t


# ------------------------------------------------------------------------------------------------------- attributes
# P(attribute | female), P(attribute | male): chosen so the marginals match CELEBA_POSITIVE_PERCENT.
_BY_SEX = {
    "Young": (0.85, 0.67),
    "Eyeglasses": (0.042, 0.10),
    "Pale_Skin": (0.06, 0.02),
    "Rosy_Cheeks": (0.105, 0.01),
    "Wearing_Earrings": (0.30, 0.035),
    "Wearing_Lipstick": (0.80, 0.01),
    "Bangs": (0.215, 0.095),
}
# Hair colour among the not-grey, by sex: the rest is "other" (red, auburn), which CelebA leaves unlabelled.
_HAIR_BY_SEX = {"Black_Hair": (0.20, 0.33), "Blond_Hair": (0.24, 0.035), "Brown_Hair": (0.20, 0.24)}


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
    on["Mustache"] = beard and bool(u[11] < 0.27)  # a moustache comes with a beard here
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
    shade: float  # how much darker the far side of the picture is (light comes from one side)
    shade_side: int  # 0..3: which side is dark
    noise_sigma: float
    noise_offset: tuple[int, int]


def _muted_colour(rng: np.random.Generator, saturation: float) -> np.ndarray:
    """A random colour pulled towards a random grey: backgrounds and clothes like photos', not like a paint box."""
    grey = rng.uniform(50, 225)
    return _mix(np.full(3, grey), rng.uniform(0, 255, 3), saturation)


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
        hair_jitter=rng.uniform(0.96, 1.04, 3) * rng.uniform(0.88, 1.1),  # mostly lighter/darker, little hue
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
        hat_colour=_muted_colour(rng, 0.7),
        earring_hoop=bool(rng.random() < 0.6),
        metal=METALS[rng.integers(len(METALS))],
        clothes=_muted_colour(rng, 0.5),
        background=np.array([_muted_colour(rng, 0.3), _muted_colour(rng, 0.3)]),
        bg_vertical=bool(rng.random() < 0.5),
        angle=rng.uniform(-6.0, 6.0),
        shift=rng.uniform(-4.0, 4.0, 2),
        scale=rng.uniform(0.94, 1.06),
        brightness=round(rng.uniform(0.9, 1.12), 2),  # rounded so lookup tables can be cached
        shade=round(rng.uniform(0.0, 0.22), 2),
        shade_side=int(rng.integers(4)),
        noise_sigma=rng.uniform(1.5, 4.0),
        noise_offset=(int(rng.integers(NOISE_BANK - HEIGHT)), int(rng.integers(NOISE_BANK - WIDTH))),
    )


# ----------------------------------------------------------------------------------------------------------- canvas
_CIRCLE = np.linspace(0, 2 * np.pi, 48, endpoint=False)


class _Canvas:
    """ImageDraw in output-pixel coordinates, through the face's pose (rotation, scale, shift) and the supersampling.

    Every shape is a polygon or polyline, so a rotated ellipse is just a transformed list of points."""

    def __init__(self, image: Image.Image, style: _Style):
        self.opaque = ImageDraw.Draw(image)
        self.blend = ImageDraw.Draw(image, "RGBA")  # RGBA fills blend onto the RGB image (6x slower: only for alpha)
        a = math.radians(style.angle)
        s = style.scale * SUPERSAMPLE
        self.matrix = np.array([[s * math.cos(a), -s * math.sin(a)], [s * math.sin(a), s * math.cos(a)]])
        self.offset = SUPERSAMPLE * (POSE_CENTRE + style.shift) - self.matrix @ POSE_CENTRE
        self.pixel = s  # one output pixel, in canvas pixels

    def _map(self, points) -> list[float]:
        return (np.asarray(points, float) @ self.matrix.T + self.offset).ravel().tolist()

    def _draw(self, fill) -> ImageDraw.ImageDraw:
        return self.blend if len(fill) == 4 else self.opaque

    def polygon(self, points, fill) -> None:
        self._draw(fill).polygon(self._map(points), fill=fill)

    def line(self, points, fill, width: float) -> None:
        width_px = max(1, int(round(width * self.pixel)))
        self._draw(fill).line(self._map(points), fill=fill, width=width_px, joint="curve")

    def ellipse(self, cx, cy, rx, ry, fill, angle: float = 0.0) -> None:
        self.polygon(_ellipse_points(cx, cy, rx, ry, angle), fill)


_COS, _SIN = np.cos(_CIRCLE), np.sin(_CIRCLE)
_UPPER_HALF = np.linspace(np.pi, 2 * np.pi, 25)  # angles from the left, over the top, to the right
_QUARTER = np.linspace(0, np.pi / 2, 20)
_LOOP = np.linspace(0, 2 * np.pi, 33)  # closed outlines (hoops, glasses frames)


def _xy(x, y) -> np.ndarray:
    """(n, 2) points from x and y arrays (a cheaper np.stack(..., axis=1) for the many small shapes)."""
    points = np.empty((len(x), 2))
    points[:, 0], points[:, 1] = x, y
    return points


def _ellipse_points(cx, cy, rx, ry, angle: float = 0.0) -> np.ndarray:
    x, y = rx * _COS, ry * _SIN
    if not angle:
        return _xy(cx + x, cy + y)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return _xy(cx + c * x - s * y, cy + s * x + c * y)


@lru_cache(maxsize=None)
def _bernstein(n_control: int, n: int) -> np.ndarray:
    """(n, n_control) weights: row j blends the control points into the curve's j-th point."""
    t = np.linspace(0, 1, n)[:, None]
    k = np.arange(n_control)[None, :]
    binomial = np.array([math.comb(n_control - 1, j) for j in range(n_control)])[None, :]
    return binomial * t ** k * (1 - t) ** (n_control - 1 - k)


def _bezier(*control, n: int = 16) -> np.ndarray:
    """n points on the Bezier curve with these control points (quadratic or cubic)."""
    return _bernstein(len(control), n) @ np.asarray(control, float)


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
        skin = _mix(skin, np.full(3, skin.mean()), 0.25) * 0.95
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
    top = _UPPER_HALF
    skull = _xy(CX + w * np.cos(top), TEMPLE_Y + (TEMPLE_Y - SKULL_TOP) * np.sin(top))
    t = _QUARTER
    e = 2.0 / _jaw_power(look)
    depth = style.chin_y - TEMPLE_Y
    right = _xy(CX + w * np.cos(t) ** e, TEMPLE_Y + depth * np.sin(t) ** e)
    return np.concatenate([skull, right, _mirror(right)[::-1]])


@lru_cache(maxsize=None)
def _gradient(vertical: bool, scale: int) -> Image.Image:
    """An 'L' ramp 0 -> 255, top to bottom or left to right, at `scale` x the output size."""
    ramp = Image.linear_gradient("L")  # 256 x 256, top to bottom
    return (ramp if vertical else ramp.rotate(90)).resize((WIDTH * scale, HEIGHT * scale), Image.BILINEAR)


def _draw_background(style: _Style) -> Image.Image:
    """A two-colour gradient, mixed at 1x and blown up (it is smooth, so nothing is lost): 4x less work."""
    first, second = (Image.new("RGB", (WIDTH, HEIGHT), _rgb(colour)) for colour in style.background)
    gradient = Image.composite(second, first, _gradient(style.bg_vertical, 1))
    return gradient.resize((WIDTH * SUPERSAMPLE, HEIGHT * SUPERSAMPLE), Image.NEAREST)


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
    top = _UPPER_HALF
    arc = _xy(CX + rx * np.cos(top), TEMPLE_Y + ry * np.sin(top))
    if look.male:
        side = np.array([(CX + rx, TEMPLE_Y), (CX + rx - 3, 124), (CX + w - 8, 130)])
        c.polygon(np.concatenate([arc, side, _mirror(side)[::-1]]), _rgb(look.hair * 0.85))
        return
    bottom = style.hair_length if style.hair_variant != 2 else 158.0  # variant 2 is a chin-length bob
    ys = np.linspace(TEMPLE_Y, bottom, 12)
    flare = (ys - TEMPLE_Y) / (bottom - TEMPLE_Y)
    xs = CX + rx + 6 * flare + style.wave * np.sin(ys / 7.0)
    side = np.concatenate([_xy(xs, ys), [(CX + 12, bottom - 6)]])
    c.polygon(np.concatenate([arc, side, _mirror(side)[::-1]]), _rgb(look.hair * 0.88))


def _draw_ears(c: _Canvas, look: _Look, style: _Style) -> None:
    w = _half_width(look, style)
    for sign in (-1, 1):
        c.ellipse(CX + sign * (w - 1), 117, 6, 11.5, _rgb(look.skin * 0.95), angle=sign * 8)
        c.ellipse(CX + sign * (w + 0.5), 117, 3, 7, _rgb(look.skin * 0.78), angle=sign * 8)


def _draw_head(c: _Canvas, look: _Look, style: _Style) -> None:
    c.polygon(_head_outline(look, style), _rgb(look.skin))
    # A faint highlight on the forehead gives the flat shape a little volume.
    w = _half_width(look, style)
    c.ellipse(CX, 95, w * 0.6, 18, _rgb((255, 255, 255), 0.06))


def _draw_age_lines(c: _Canvas, look: _Look, style: _Style) -> None:
    """Wrinkles of an older face: forehead, crow's feet, bags under the eyes, nose-to-mouth folds."""
    if look.on["Young"]:
        return
    ink = _rgb(look.skin * 0.7)
    for y in (80.0, 86.0, 92.0):  # forehead (hidden under bangs or a hat)
        c.line(_bezier((CX - 20, y + 1.5), (CX, y - 1.5), (CX + 20, y + 1.5)), ink, 1.0)
    ex, w = CX + style.eye_dx, style.mouth_width
    right_side = [  # (points, width), drawn on the right and mirrored to the left
        *(([(ex + 10, EYE_Y + dy * 0.4), (ex + 15, EYE_Y + dy)], 0.9) for dy in (-3.0, 0.0, 3.0)),  # crow's feet
        (_bezier((ex - 6, EYE_Y + 6), (ex, EYE_Y + 9.5), (ex + 6, EYE_Y + 6)), 1.0),  # bags under the eyes
        (_bezier((CX + 9, NOSE_Y - 3), (CX + w + 6, NOSE_Y + 6), (CX + w + 3, MOUTH_Y + 5)), 1.3),  # nose to mouth
        ([(CX + w + 1, MOUTH_Y + 4), (CX + w + 2, MOUTH_Y + 14)], 1.0),  # mouth corner to chin
    ]
    for points, width in right_side:
        c.line(points, ink, width)
        c.line(_mirror(points), ink, width)


def _draw_cheeks(c: _Canvas, look: _Look, style: _Style) -> None:
    if not look.on["Rosy_Cheeks"]:
        return
    for sign in (-1, 1):
        for r in (11.0, 8.5, 6.0, 3.5):  # stacked translucent discs: a soft blush
            c.ellipse(CX + sign * 23, 138, r, r * 0.75, (232, 60, 80, 60))


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
    w = style.mouth_width + (4.0 if look.on["Smiling"] else 0.0)
    u = np.linspace(-1, 1, n)
    curve = 6.5 if look.on["Smiling"] else 0.6  # how much lower the centre sits than the corners
    return CX + w * u, MOUTH_Y - curve + curve * (1 - u ** 2)


def _draw_mouth(c: _Canvas, look: _Look, style: _Style) -> None:
    xs, ys = _mouth_line(look, style)
    u = np.linspace(-1, 1, len(xs))
    bulge = np.sqrt(1 - u ** 2)
    upper_t, lower_t = (3.0, 3.8) if look.male else (3.6, 4.8)
    if look.on["Wearing_Lipstick"]:  # painted lips read fuller
        upper_t, lower_t = upper_t + 0.8, lower_t + 0.8
    opening = 0.0
    if look.on["Mouth_Slightly_Open"]:
        opening = 6.0 if look.on["Smiling"] else 4.5
    lips = _rgb(style.lipstick if look.on["Wearing_Lipstick"] else _mix(look.skin, (160, 70, 75), 0.45))
    top_edge = _xy(xs, ys - upper_t * bulge - 0.8 * np.cos(u * 2 * np.pi) * bulge)
    seam = _xy(xs, ys)
    low_seam = _xy(xs, ys + opening * bulge)
    bottom_edge = _xy(xs, ys + opening * bulge + lower_t * bulge)
    if opening:
        c.polygon(np.concatenate([seam, low_seam[::-1]]), (70, 22, 28))
        if look.on["Smiling"]:
            teeth = _xy(xs, ys + opening * 0.45 * bulge)
            c.polygon(np.concatenate([seam[2:-2], teeth[2:-2][::-1]]), (240, 238, 228))
    c.polygon(np.concatenate([top_edge, seam[::-1]]), lips)
    c.polygon(np.concatenate([low_seam, bottom_edge[::-1]]), lips)
    c.line(seam if not opening else low_seam, _rgb(_mix(lips, (40, 10, 10), 0.5)), 0.8)
    if look.on["Smiling"]:  # creases that curl up past the mouth corners
        crease = _rgb(look.skin * 0.72)
        for sign in (-1, 1):
            x, y = (xs[-1], ys[-1]) if sign > 0 else (xs[0], ys[0])
            c.line(_bezier((x - sign * 1.0, y - 3.5), (x + sign * 3.5, y - 1.0), (x + sign * 2.0, y + 3.5), n=8),
                   crease, 1.1)


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
    # The jaw runs right -> chin -> left, the inner edge left -> right: one simple (non-crossing) outline.
    c.polygon(np.concatenate([jaw, inner]), _rgb(_facial_hair_colour(look)))


def _draw_mustache(c: _Canvas, look: _Look, style: _Style) -> None:
    if not look.on["Mustache"]:
        return
    xs, ys = _mouth_line(look, style, n=9)
    u = np.linspace(-1, 1, len(xs))
    bottom = _xy(xs * 1.0, ys - 2.0 - 1.0 * (1 - u ** 2))
    top = _xy(CX + (xs - CX) * 1.05, ys - 11.0 + 4.0 * u ** 2)
    tips = [(xs[-1] + 3.5, ys[-1] + 5), (xs[0] - 3.5, ys[0] + 5)]  # drooping ends past the mouth corners
    c.polygon(np.concatenate([top, [tips[0]], bottom[::-1], [tips[1]]]), _rgb(_facial_hair_colour(look) * 0.6))


def _hairline(look: _Look, style: _Style) -> np.ndarray:
    """Where the hair meets the forehead, left temple to right temple (bangs: a ragged fringe above the brows)."""
    w = _half_width(look, style)
    u = np.linspace(-1, 1, 33)
    if look.on["Bangs"]:
        y = style.bang_y + style.bang_slope * u + 1.8 * np.abs(np.sin(u * 9 * np.pi / 2))
        front = _xy(CX + u * (w - 1), y)
        return np.concatenate([[(CX - w + 1, 108)], front, [(CX + w - 1, 108)]])
    high = style.hairline - (5.0 if look.male and not look.on["Young"] else 0.0)  # receding with age
    y = high + 12 * u ** 4 - 4.5 * np.exp(-((u - style.parting) / 0.1) ** 2)
    front = _xy(CX + u * (w - 8), y)
    side_low = 112.0 if look.male else 108.0  # men: a short sideburn in front of the ear
    left_side = [(CX - w + 1, side_low), (CX - w + 4, 92)]
    return np.concatenate([left_side, front, _mirror(left_side)[::-1]])


def _draw_front_hair(c: _Canvas, look: _Look, style: _Style) -> None:
    """The hair over the top of the head, down to the hairline (or the fringe)."""
    if look.on["Bald"]:
        return
    w = _half_width(look, style)
    vol = style.hair_volume * (0.7 if look.male else 1.0)
    rx, ry = w + 1.5 + vol * 0.5, TEMPLE_Y - SKULL_TOP + vol
    top = np.linspace(2 * np.pi + 0.08, np.pi - 0.08, 29)  # right -> over the top -> left
    arc = _xy(CX + rx * np.cos(top), TEMPLE_Y + ry * np.sin(top))
    hairline = _hairline(look, style)
    c.polygon(np.concatenate([arc, hairline]), _rgb(look.hair))
    # A few strands and a sheen, so hair reads as hair; strands stop short of the hairline.
    dark, light = _rgb(look.hair * 0.72), _rgb(_mix(look.hair, (255, 255, 255), 0.25))
    px = CX + style.parting * (w - 8)
    for k in (-2, -1, 1, 2):
        end_x = CX + k * (w - 4) / 2.2 + k * 3
        end_y = np.interp(end_x, hairline[:, 0], hairline[:, 1]) - 4
        c.line(_bezier((px, TEMPLE_Y - ry + 6), (end_x - k * 3, 60), (end_x, end_y)), dark, 0.9)
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
            c.line(_xy(x + 6.0 * np.cos(_LOOP), 135.5 + 7.0 * np.sin(_LOOP)), metal, 2.2)
        else:
            c.line([(x, 128), (x, 135)], metal, 1.2)
            c.ellipse(x, 138.5, 3.4, 4.4, metal)


def _draw_glasses(c: _Canvas, look: _Look, style: _Style) -> None:
    if not look.on["Eyeglasses"]:
        return
    frame = _rgb(style.frame)
    t = _LOOP
    power = 2.0 if style.glasses_round else 4.0  # round or rounded-rectangle lenses
    e = 2.0 / power
    w = _half_width(look, style)
    lens = (30, 30, 40, 215) if style.glasses_dark else (200, 225, 255, 40)
    for sign in (-1, 1):
        ex = CX + sign * style.eye_dx
        pts = _xy(ex + 12 * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** e,
                        EYE_Y + 0.5 + 9 * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** e)
        c.polygon(pts, lens)
        c.line(pts, frame, 2.4)
        c.line([(ex + sign * 12, EYE_Y - 3), (CX + sign * (w - 1), EYE_Y - 4)], frame, 1.8)
    c.line(_bezier((CX - style.eye_dx + 11.5, EYE_Y - 2), (CX, EYE_Y - 5), (CX + style.eye_dx - 11.5, EYE_Y - 2)),
           frame, 1.8)


def _draw_hat(c: _Canvas, look: _Look, style: _Style) -> None:
    """A beanie, a cap or a wide-brimmed hat over the top of the head; the hair shows only below it."""
    if not look.on["Wearing_Hat"]:
        return
    w = _half_width(look, style) + 4
    colour, dark = _rgb(style.hat_colour), _rgb(style.hat_colour * 0.7)
    top = _UPPER_HALF
    if style.hat_kind == 0:  # beanie with a folded band
        c.polygon(_xy(CX + w * np.cos(top), 88 + 44 * np.sin(top)), colour)
        c.polygon([(CX - w - 1, 78), (CX + w + 1, 78), (CX + w + 1, 92), (CX - w - 1, 92)], dark)
        for x in np.linspace(CX - w + 4, CX + w - 4, 9):
            c.line([(x, 80), (x, 90)], colour, 0.8)
    elif style.hat_kind == 1:  # cap with a brim
        c.polygon(_xy(CX + w * np.cos(top), 86 + 42 * np.sin(top)), colour)
        brim = np.linspace(0, np.pi, 17)
        c.polygon(_xy(CX + (w + 4) * np.cos(brim), 84 + 10 * np.sin(brim)), dark)
        c.ellipse(CX, 45, 3, 2, dark)
    else:  # wide brim
        c.ellipse(CX, 82, w + 26, 9, dark)
        c.polygon([(CX - w + 6, 82), (CX - w + 9, 46), (CX, 41), (CX + w - 9, 46), (CX + w - 6, 82)], colour)
        c.polygon([(CX - w + 6.5, 72), (CX + w - 6.5, 72), (CX + w - 6, 80), (CX - w + 6, 80)], dark)


_LAYERS = (_draw_body, _draw_back_hair, _draw_ears, _draw_head, _draw_age_lines, _draw_cheeks, _draw_nose,
           _draw_eyes, _draw_brows, _draw_beard, _draw_mouth, _draw_mustache, _draw_front_hair, _draw_bald_head,
           _draw_earrings, _draw_glasses, _draw_hat)


@lru_cache(maxsize=None)
def _noise_bank() -> np.ndarray:
    """Unit Gaussian noise from a fixed seed; each image adds its own crop of it (cheaper than fresh noise)."""
    return np.random.default_rng(20240601).standard_normal((NOISE_BANK, NOISE_BANK)).astype(np.float32)


@lru_cache(maxsize=None)
def _shade_mask(side: int, strength: float) -> Image.Image:
    """How much black to mix in at each pixel: 0 on the lit side up to `strength` on the far side."""
    ramp = _gradient(vertical=side % 2 == 0, scale=1)
    ramp = ramp if side < 2 else ramp.transpose(Image.ROTATE_180)
    return ramp.point([int(v * strength + 0.5) for v in range(256)])


def _finish(image: Image.Image, style: _Style) -> Image.Image:
    """Downsample, then light the scene (one side darker, overall brightness) and add a little sensor noise.

    PIL's C operations (composite, blend, add) keep this well under a millisecond."""
    small = image.reduce(SUPERSAMPLE)
    black = Image.new("RGB", small.size)
    small = Image.composite(black, small, _shade_mask(style.shade_side, style.shade))
    small = Image.blend(black, small, style.brightness)  # = small * brightness, clipped (alpha > 1 extrapolates)
    top, left = style.noise_offset
    noise = _noise_bank()[top:top + HEIGHT, left:left + WIDTH] * style.noise_sigma + 128.5
    grain = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    return ImageChops.add(small, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


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
    return _finish(image, style)


def make_face(index: int, seed: int = 0) -> tuple[Image.Image, dict[str, int]]:
    """Image and attributes of SynthFaces image `index` (0-based): a function of (seed, index) only."""
    if index < 0 or seed < 0:
        raise ValueError(f"make_face: index and seed must be >= 0, got index={index}, seed={seed}")
    rng = np.random.default_rng((seed, index))
    attributes = sample_attributes(rng)
    return render_face(attributes, rng), attributes


# ------------------------------------------------------------------------------------------------------- dataset
@dataclass
class SynthSummary:
    """What `generate` wrote: counts, per-attribute positive rates (%) and speed."""

    out_dir: Path
    n: int
    split_counts: dict[str, int]
    positive_percent: dict[str, float]
    seconds: float
    images_per_second: float = field(init=False)

    def __post_init__(self) -> None:
        self.images_per_second = self.n / max(self.seconds, 1e-9)

    def __str__(self) -> str:
        splits = ", ".join(f"{name} {count:,}" for name, count in self.split_counts.items())
        lines = [
            f"SynthFaces: {self.n:,} images in {self.out_dir}",
            f"splits: {splits}",
            f"time: {self.seconds:.1f} s ({self.images_per_second:,.0f} images/s)",
            f"{'attribute':<20} {'SynthFaces %':>12} {'CelebA %':>9}",
        ]
        for name in CONDITIONING_ATTRIBUTES:
            lines.append(f"{name:<20} {self.positive_percent[name]:>12.1f} {CELEBA_POSITIVE_PERCENT[name]:>9.1f}")
        return "\n".join(lines)


def image_name(index: int) -> str:
    """CelebA's file name of the image at 0-based `index`: 000001.jpg for index 0."""
    return f"{index + 1:06d}.jpg"


def split_of(index: int, n: int) -> int:
    """0 train / 1 valid / 2 test: contiguous 80/10/10 ranges, like CelebA's official partition."""
    n_train = int(n * SPLIT_FRACTIONS[0])
    n_valid = int(n * SPLIT_FRACTIONS[1])
    return 0 if index < n_train else 1 if index < n_train + n_valid else 2


def _write_atomic(path: Path, write) -> None:
    """Write via a temporary name in the same folder, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda tmp: tmp.write_text(text))


def _render_chunk(indices: range, seed: int, image_dir: str) -> list[tuple[int, list[int]]]:
    """Worker task: draw and save a run of images; returns (index, 40 values) for each."""
    rows = []
    for index in indices:
        image, attributes = make_face(index, seed)
        path = Path(image_dir) / image_name(index)
        _write_atomic(path, partial(image.save, format="JPEG", quality=JPEG_QUALITY))
        rows.append((index, [attributes[name] for name in CELEBA_ATTRIBUTES]))
    return rows


def _run_chunks(chunks: list[range], seed: int, image_dir: str, workers: int):
    """Yield each chunk's rows as it finishes: in this process for one worker, else in a process pool."""
    if workers == 1:
        for chunk in chunks:
            yield _render_chunk(chunk, seed, image_dir)
        return
    # fork: workers start at once and need not re-import torch (which `facegen.data` pulls in); Python >= 3.12 warns
    # about forking a threaded process (Jupyter is one), harmless here since workers only draw and save images.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        with warnings.catch_warnings():  # workers are forked while submitting
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            futures = [pool.submit(_render_chunk, chunk, seed, image_dir) for chunk in chunks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # on an error or an interrupt, don't wait for the chunks nobody will read
            for future in futures:
                future.cancel()


def read_marker(folder: Path) -> dict | None:
    """The SynthFaces marker of `folder` ({"n", "seed", "profile"}), or None when facegen did not generate it."""
    import json

    try:
        marker = json.loads((Path(folder) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _write_marker(out_dir: Path, n: int, seed: int, profile: str | None) -> None:
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    marker = {"generator": "facegen SynthFaces", "n": n, "seed": seed, "profile": profile}
    _write_text(out_dir / MARKER_FILE, json.dumps(marker) + "\n")


def _check_out_dir(out_dir: Path) -> None:
    """An empty or missing folder, or a SynthFaces folder facegen generated (it carries MARKER_FILE). A folder
    without the marker is never rewritten: it may be someone's CelebA."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"generate: out_dir {out_dir} is a file; expected a folder (new, empty, or a SynthFaces one)")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if read_marker(out_dir) is None and ((out_dir / ATTR_FILE).exists() or (out_dir / IMAGE_DIR).exists()):
        raise ValueError(f"generate: {out_dir} holds a dataset in the CelebA layout that facegen did not generate (no "
                         f"{MARKER_FILE}); facegen never rewrites it: choose a new or empty folder (or, if it is "
                         "an old SynthFaces folder you want regenerated, delete it first)")
    ours = {IMAGE_DIR, ATTR_FILE, PARTITION_FILE}
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in ours and not p.name.startswith("."))
    image_dir = out_dir / IMAGE_DIR
    if image_dir.is_dir():
        foreign += [f"{IMAGE_DIR}/{p.name}" for p in image_dir.iterdir()
                    if not _NAME_RE.match(p.name) and not p.name.startswith(".")][:5]
    if foreign:
        raise ValueError(f"generate: out_dir {out_dir} holds files that are not SynthFaces output "
                         f"({', '.join(foreign[:5])}); expected a new or empty folder, or a previous SynthFaces folder")


def _prepare_out_dir(out_dir: Path, n: int) -> Path:
    """Create the folders; drop the old lists first (an interrupted run then has no half-valid dataset), any images
    past the new count, and temporary files an interrupted run left behind."""
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    for name in (ATTR_FILE, PARTITION_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for path in [*image_dir.iterdir(), *out_dir.iterdir()]:
        stale_image = _NAME_RE.match(path.name) and int(path.name[:6]) > n
        if stale_image or _TMP_RE.match(path.name):
            path.unlink()
    return image_dir


def _attribute_text(rows: list[list[int]]) -> str:
    header = f"{len(rows)}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n"  # the real file ends line 2 with a space
    body = "".join(image_name(i) + "".join(f" {v:2d}" for v in row) + "\n" for i, row in enumerate(rows))
    return header + body


def _partition_text(n: int) -> str:
    return "".join(f"{image_name(i)} {split_of(i, n)}\n" for i in range(n))


def generate(out_dir, n: int, seed: int = 0, workers: int | None = None, progress: bool = True,
             profile: str | None = None) -> SynthSummary:
    """Write `n` SynthFaces images and CelebA's attribute and partition files to `out_dir`.

    The result does not depend on `workers` (None: one per CPU core). `out_dir` must be new, empty, or a previous
    SynthFaces folder (regenerated in place; it carries MARKER_FILE, written first, which records `n`, `seed` and
    `profile`: the name of the profile it was made for, None when made by hand with `facegen data synth`)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 10:
        raise ValueError(f"generate: n must be an integer >= 10 (8/1/1 images for train/valid/test), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"generate: seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"generate: workers must be None or an integer >= 1, got {workers!r}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    _write_marker(out_dir, n, seed, profile)
    image_dir = _prepare_out_dir(out_dir, n)
    size = max(1, min(CHUNK, math.ceil(n / (4 * workers))))  # several tasks per worker, even for small n
    chunks = [range(i, min(i + size, n)) for i in range(0, n, size)]
    rows: list[list[int]] = [[] for _ in range(n)]
    with tqdm(total=n, desc="SynthFaces", unit="img", disable=not progress) as bar:
        for chunk_rows in _run_chunks(chunks, seed, str(image_dir), workers):
            for index, row in chunk_rows:
                rows[index] = row  # by index: the result does not depend on which worker finished first
            bar.update(len(chunk_rows))
    _write_text(out_dir / PARTITION_FILE, _partition_text(n))
    _write_text(out_dir / ATTR_FILE, _attribute_text(rows))  # last: its presence means the dataset is complete
    values = np.array(rows)
    percent = {name: float(100 * np.mean(values[:, k] == 1)) for k, name in enumerate(CELEBA_ATTRIBUTES)}
    counts = np.bincount([split_of(i, n) for i in range(n)], minlength=3)
    return SynthSummary(out_dir=out_dir, n=n, split_counts=dict(zip(SPLIT_NAMES, map(int, counts))),
                        positive_percent=percent, seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------- grid
LABELS = {
    "Bald": "bald", "Bangs": "bangs", "Black_Hair": "black", "Blond_Hair": "blond", "Brown_Hair": "brown",
    "Eyeglasses": "glasses", "Gray_Hair": "gray", "Male": "male", "Mouth_Slightly_Open": "open",
    "Mustache": "mustache", "No_Beard": "beard", "Pale_Skin": "pale", "Rosy_Cheeks": "rosy", "Smiling": "smile",
    "Wearing_Earrings": "earrings", "Wearing_Hat": "hat", "Wearing_Lipstick": "lipstick", "Young": "young",
}


def short_label(attributes: dict[str, int]) -> str:
    """The positive conditioning attributes in a few short words (No_Beard is shown the other way round: 'beard')."""
    words = [LABELS[name] for name in CONDITIONING_ATTRIBUTES if _shown(attributes, name)]
    half = (len(words) + 1) // 2
    return " ".join(words[:half]) + "\n" + " ".join(words[half:])


def _shown(attributes: dict[str, int], name: str) -> bool:
    """Is `name` visible on the face: positive, except No_Beard, whose visible side is the beard (-1)."""
    return attributes.get(name, -1) == (-1 if name == "No_Beard" else 1)


def covering_selection(rows: list[dict[str, int]], count: int, per_attribute: int = 2) -> list[int]:
    """`count` row indices, in order, such that every conditioning attribute is shown `per_attribute` times when the
    rows allow it (rarest attributes first); the remaining places go to the earliest rows."""
    chosen: set[int] = set()
    by_rarity = sorted(CONDITIONING_ATTRIBUTES, key=lambda name: sum(_shown(row, name) for row in rows))
    for name in by_rarity:
        have = sum(_shown(rows[i], name) for i in chosen)
        for i, row in enumerate(rows):
            if have >= per_attribute or len(chosen) >= count:
                break
            if i not in chosen and _shown(row, name):
                chosen.add(i)
                have += 1
    rest = (i for i in range(len(rows)) if i not in chosen)
    while len(chosen) < min(count, len(rows)):
        chosen.add(next(rest))
    return sorted(chosen)


def _grid_items(source, count: int, cover: bool) -> list[tuple[Image.Image, dict[str, int]]]:
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        lines = (folder / ATTR_FILE).read_text().splitlines()
        names = lines[1].split()
        fields = [line.split() for line in lines[2:] if line.strip()]
        rows = [dict(zip(names, map(int, f[1:]))) for f in fields]
        picked = covering_selection(rows, count) if cover else range(min(count, len(rows)))
        return [(Image.open(folder / IMAGE_DIR / fields[i][0]).convert("RGB"), rows[i]) for i in picked]
    items = list(source)[:count]
    if not all(isinstance(item, tuple) and len(item) == 2 for item in items):
        raise ValueError("save_labelled_grid: expected a SynthFaces/CelebA folder or a list of (image, attributes)")
    return items


def save_labelled_grid(out_dir_or_images, path, rows: int = 8, cols: int = 8, dpi: int = 100,
                       cover: bool = True) -> Path:
    """Save a rows x cols PNG of faces, each titled with its positive conditioning attributes.

    `out_dir_or_images` is a dataset folder or a list of (PIL image, attributes). From a folder, `cover=True` picks
    the faces so that every conditioning attribute shows at least twice (rare ones like Bald too), the rest in file
    order; `cover=False` takes the first rows*cols images. A list is shown as given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = _grid_items(out_dir_or_images, rows * cols, cover)
    if not items:
        raise ValueError("save_labelled_grid: no images to show")
    fig = Figure(figsize=(cols * 1.45, rows * 2.0), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(items):
            image, attributes = items[k]
            ax.imshow(image)
            ax.set_title(short_label(attributes), fontsize=6.5, linespacing=1.1, pad=2)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.97, bottom=0.01, wspace=0.05, hspace=0.28)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def main(argv: list[str] | None = None) -> None:
    """`python -m facegen.data.synthfaces OUT -n 2000 --grid docs/synthfaces_grid.png`: generate, print the summary,
    and optionally save the labelled grid of the first 64 faces."""
    import argparse

    parser = argparse.ArgumentParser(description="Write SynthFaces in CelebA's folder layout.")
    parser.add_argument("out_dir")
    parser.add_argument("-n", type=int, default=2000, help="number of images (>= 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU core)")
    parser.add_argument("--grid", default=None, help="also save an 8x8 labelled grid PNG here")
    args = parser.parse_args(argv)
    print(generate(args.out_dir, args.n, seed=args.seed, workers=args.workers))
    if args.grid:
        print(f"grid: {save_labelled_grid(args.out_dir, args.grid)}")


if __name__ == "__main__":
    main()
