"""Looking inside a trained codebook: which codes are used where, what they look like, which carry an attribute.

All functions take token grids `indices` of shape (N, h, w) (h = w = 16 for 128 px faces) as produced by
`encode_indices`; images are (N, 3, H, W) with H = 8h.
"""

from __future__ import annotations

import torch


def code_counts(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How often each code appears over all grids: LongTensor (K,)."""
    return torch.bincount(indices.flatten(), minlength=codebook_size)


def code_patches(images: torch.Tensor, indices: torch.Tensor, code: int, limit: int = 16,
                 region: tuple[slice, slice] | None = None) -> torch.Tensor:
    """The image cells (patches of size H/h x W/w) whose token is `code`, in scan order, at most `limit`:
    a tensor (n, 3, H/h, W/w). Each token of an f8 tokenizer "owns" one 8x8 pixel cell. `region` (row slice,
    column slice of the grid) keeps only cells inside it: the band a ranking was computed on."""
    n, h, w = indices.shape
    if images.shape[0] != n or images.shape[-2] % h or images.shape[-1] % w:
        raise ValueError(f"images {tuple(images.shape)} do not match token grids {tuple(indices.shape)}")
    ph, pw = images.shape[-2] // h, images.shape[-1] // w
    matches = indices == code
    if region is not None:
        inside = torch.zeros(h, w, dtype=torch.bool, device=indices.device)
        inside[region] = True
        matches &= inside
    where = matches.nonzero()[:limit]  # rows of (image, row, col)
    return torch.stack([images[i, :, r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] for i, r, c in where.tolist()]) \
        if len(where) else images.new_zeros(0, images.shape[1], ph, pw)


def position_histograms(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Per grid position, the distribution of codes over the N grids: FloatTensor (h, w, K) summing to 1 over K."""
    n, h, w = indices.shape
    one_hot = torch.zeros(h * w, codebook_size)
    one_hot.scatter_add_(1, indices.reshape(n, h * w).T, torch.ones(h * w, n))
    return (one_hot / n).reshape(h, w, codebook_size)


def attribute_position_shift(indices: torch.Tensor, has_attribute: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Where an attribute changes the tokens: per position, the total variation distance between the code
    distributions of faces with and without it (0 = same codes, 1 = disjoint codes): FloatTensor (h, w)."""
    has_attribute = has_attribute.bool()
    if has_attribute.all() or not has_attribute.any():
        raise ValueError("has_attribute must mark some faces True and some False")
    with_attr = position_histograms(indices[has_attribute], codebook_size)
    without = position_histograms(indices[~has_attribute], codebook_size)
    return 0.5 * (with_attr - without).abs().sum(dim=-1)


def attribute_codes(indices: torch.Tensor, has_attribute: torch.Tensor, codebook_size: int,
                    region: tuple[slice, slice] | None = None, smoothing: float = 1.0, top: int = 8) -> list[tuple]:
    """Codes most over-represented in faces with the attribute (optionally only inside `region` = (rows, cols)):
    a list of (code, count with, count without, log-ratio of their smoothed frequencies), highest ratio first."""
    has_attribute = has_attribute.bool()
    grid = indices if region is None else indices[:, region[0], region[1]]
    with_counts = code_counts(grid[has_attribute], codebook_size).double()
    without_counts = code_counts(grid[~has_attribute], codebook_size).double()
    p_with = (with_counts + smoothing) / (with_counts.sum() + smoothing * codebook_size)
    p_without = (without_counts + smoothing) / (without_counts.sum() + smoothing * codebook_size)
    log_ratio = (p_with / p_without).log()
    order = torch.argsort(log_ratio, descending=True)[:top]
    return [(int(c), int(with_counts[c]), int(without_counts[c]), float(log_ratio[c])) for c in order]


def principal_components(vectors: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Project (K, D) code vectors on their top-k principal axes: (projections (K, k), explained variance ratio (k,))."""
    centred = vectors - vectors.mean(dim=0, keepdim=True)
    _, singular, v = torch.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    return centred @ v[:k].T, variance[:k] / variance.sum()
