"""Draw the course's pipeline as one figure for the book's introduction: `python book/pipeline_figure.py`.

Top row: how a face becomes a sequence of tokens (real pictures: a SynthFaces face, its 16x16 codes from the trained
`cpu` VQ-VAE, the VQ-VAE's reconstruction). Bottom row: how GPT-2 writes a new one. Each box names the notebook
that teaches it. Writes book/images/pipeline.svg and .png (committed; re-run after changing the models).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from facegen.config import get_profile  # noqa: E402
from facegen.data.synthfaces import make_face  # noqa: E402
from facegen.data.transforms import face_transform, to_uint8  # noqa: E402
from facegen.pipeline import ensure_vqvae  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"
BLUE, ORANGE, GREY = "#dbe9f6", "#fde3c8", "#555555"


def face_codes_and_reconstruction(index: int = 7):
    """A SynthFaces face (uint8 HWC), its 16x16 code grid and the VQ-VAE's reconstruction (uint8 HWC)."""
    image, _ = make_face(index)
    vqvae = ensure_vqvae(get_profile("cpu"))
    x = face_transform(128)(image).unsqueeze(0)
    with torch.inference_mode():
        codes = vqvae.encode_indices(x)
        recon = vqvae.decode_indices(codes)
    as_hwc = lambda t: to_uint8(t[0]).permute(1, 2, 0).numpy()  # noqa: E731
    return as_hwc(x), codes[0].numpy(), as_hwc(recon)


def box(ax, x, y, w, h, title, detail, colour, notebook):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.06", fc=colour, ec=GREY))
    ax.text(x + w / 2, y + h - 0.13, title, ha="center", va="top", fontsize=10.5, weight="bold")
    ax.text(x + w / 2, y + h / 2 - 0.12, detail, ha="center", va="center", fontsize=8.5, linespacing=1.35)
    ax.text(x + w - 0.05, y + 0.06, notebook, ha="right", va="bottom", fontsize=7.5, color=GREY, style="italic")


def arrow(ax, start, end, label=""):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color=GREY, lw=1.3))
    if label:  # beside the arrow's middle, never on it
        ax.text((start[0] + end[0]) / 2 + 0.12, (start[1] + end[1]) / 2, label, ha="left", va="center", fontsize=8,
                color=GREY)


def picture(fig, rect, array, caption, cmap=None):
    ax = fig.add_axes(rect)
    ax.imshow(array, cmap=cmap, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(caption, fontsize=8.5, pad=3)
    return ax


def draw(face, codes, recon) -> plt.Figure:
    fig = plt.figure(figsize=(13, 5.6))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 13), ax.set_ylim(0, 5.6), ax.axis("off")

    # Row 1: a face becomes 256 tokens, and tokens become a face again.
    picture(fig, [0.015, 0.56, 0.11, 0.26], face, "128x128 face")
    box(ax, 1.8, 3.15, 2.2, 1.5, "VQ-VAE encoder", "conv layers: 128x128x3\n-> 16x16 vectors\nnearest of K=512 codes",
        BLUE, "01, 02")
    picture(fig, [0.33, 0.56, 0.12, 0.26], codes, "16x16 code ids", cmap="tab20")
    box(ax, 6.05, 3.15, 2.15, 1.5, "tokens", "256 ids in raster order\n+ attribute tokens\n(Smiling=1, Male=0, ...)",
        BLUE, "03, 04")
    box(ax, 8.85, 3.15, 1.85, 1.5, "VQ-VAE decoder", "codes -> pixels", BLUE, "02")
    picture(fig, [0.855, 0.56, 0.11, 0.26], recon, "reconstruction")
    arrow(ax, (1.45, 3.9), (1.8, 3.9))
    arrow(ax, (4.0, 3.9), (4.3, 3.9))
    arrow(ax, (5.85, 3.9), (6.05, 3.9))
    arrow(ax, (8.2, 3.9), (8.85, 3.9))
    arrow(ax, (10.7, 3.9), (11.1, 3.9))

    # Row 2: GPT-2 learns the sequences and writes new ones from attributes.
    sequence = "<START_FACE> <Smiling=1> <Male=?> ... <START_GENERATION> t1 t2 ... t256 <END_GENERATION>"
    box(ax, 0.3, 0.45, 3.9, 1.55, "training sequences", sequence.replace(" ... <START", "\n... <START")
        .replace("t1", "\nt1"), ORANGE, "04")
    box(ax, 4.8, 0.45, 2.6, 1.55, "GPT-2", "next-token prediction\ncross-entropy over image tokens\n(nats/token)",
        ORANGE, "05")
    box(ax, 8.0, 0.45, 2.7, 1.55, "sampling", "grammar-constrained decoding\nclassifier-free guidance\nexplorer widget",
        ORANGE, "06")
    box(ax, 11.2, 0.45, 1.6, 1.55, "VQGAN", "perceptual +\nadversarial losses:\nsharper decoder", "#e4e4e4", "07")
    arrow(ax, (7.1, 3.15), (3.6, 2.0), "tokenize the dataset")
    arrow(ax, (4.2, 1.22), (4.8, 1.22))
    arrow(ax, (7.4, 1.22), (8.0, 1.22))
    arrow(ax, (9.8, 2.0), (9.8, 3.15), "256 sampled tokens")
    arrow(ax, (12.0, 2.0), (12.0, 2.6), "compare")
    ax.text(0.1, 5.45, "a face as a sentence: tokenize", fontsize=11, weight="bold", va="top")
    ax.text(0.1, 2.35, "learn the language, then write new faces", fontsize=11, weight="bold", va="top")
    return fig


def main() -> None:
    OUT.mkdir(exist_ok=True)
    face, codes, recon = face_codes_and_reconstruction()
    fig = draw(face, codes, recon)
    for suffix in ("svg", "png"):
        # Fixed metadata keeps the committed SVG byte-identical between runs.
        fig.savefig(OUT / f"pipeline.{suffix}", dpi=110, metadata={"Date": None} if suffix == "svg" else None)
    print(f"wrote {OUT / 'pipeline.svg'} and .png; {len(np.unique(codes))} distinct codes in this face")


if __name__ == "__main__":
    main()
