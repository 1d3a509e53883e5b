"""A readable summary of a CelebA-layout dataset: split sizes and attribute rates next to real CelebA's."""

from __future__ import annotations

from facegen.attributes import CELEBA_POSITIVE_PERCENT, CONDITIONING_ATTRIBUTES


def rate_table(rates: dict[str, float], names=CONDITIONING_ATTRIBUTES, label: str = "this set") -> str:
    """Markdown table: attribute | rate here (%) | CelebA (%)."""
    lines = [f"| attribute | {label} % | CelebA % |", "|---|---:|---:|"]
    lines += [f"| {name} | {rates[name]:.1f} | {CELEBA_POSITIVE_PERCENT[name]:.1f} |" for name in names]
    return "\n".join(lines)


def format_rates(index) -> str:
    """Split sizes and the conditioning attributes' positive rates of a `CelebAIndex`."""
    sizes = ", ".join(f"{name} {len(index.split(name)):,}" for name in ("train", "valid", "test"))
    return f"{len(index):,} images in {index.root} ({sizes})\n" + rate_table(index.positive_rates())
