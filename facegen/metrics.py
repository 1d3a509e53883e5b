"""How good is a reconstruction, and how well is the codebook used?

- `psnr`: peak signal-to-noise ratio in dB, from the mean squared error; each image separately, then averaged.
- `ssim`: structural similarity (Wang et al. 2004): compares local means, contrasts and correlations in an 11x11
  Gaussian window (sigma 1.5), so it tracks perceived structure better than PSNR does.
- `codebook_usage`, `perplexity`: shared with facegen.quantize (one definition, used by both).
- `laplacian_sharpness`: how much fine detail an image has; `reconstruction_metrics`: all of the above for any
  tokenizer's round trip through its tokens.

Images are (B, C, H, W) or (C, H, W) tensors scaled to [-1, 1], hence the default data_range of 2.0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from facegen.quantize import CodebookUsage, perplexity, usage_stats

codebook_usage = usage_stats  # same function, the name a metrics reader looks for

__all__ = ["psnr", "ssim", "round_trip", "codebook_usage", "perplexity", "CodebookUsage", "laplacian_sharpness",
           "chroma_detail", "reconstruction_metrics"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_batch(x: Tensor, y: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Check that x and y are same-shaped float images and return them as (B, C, H, W)."""
    if x.shape != y.shape:
        raise ValueError(f"{name}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name}: images must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    return x.float(), y.float()


def _reduce(per_image: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"{name}: reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0, reduction: str = "mean") -> Tensor:
    """PSNR in dB = 10 log10(data_range^2 / MSE), MSE over each image's pixels and channels.

    reduction="mean" averages the per-image values over the batch; "none" returns them, shape (B,).
    Identical images have MSE 0 and PSNR +inf (as in scikit-image and torchmetrics); no NaN, no warning, but one
    such image makes the batch mean inf, so look at reduction="none" if that happens.
    """
    x, y = _as_batch(x, y, "psnr")
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))
    per_image = 10 * torch.log10(data_range**2 / mse)  # mse = 0 -> division gives inf, log10(inf) = inf
    return _reduce(per_image, reduction, "psnr")


def _gaussian_window(size: int, sigma: float) -> Tensor:
    """Normalised 2-D Gaussian (size x size) as the outer product of two 1-D Gaussians."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: Tensor, y: Tensor, data_range: float = 2.0, reduction: str = "mean") -> Tensor:
    """Mean SSIM: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, each channel separately.

    Local statistics use population (not sample) covariances, and only windows that fit inside the image count
    (no padding), as in the authors' MATLAB code and in scikit-image (`gaussian_weights=True,
    use_sample_covariance=False`). Recent torchmetrics (1.9 here) reflect-pads and also averages the border windows,
    so its mean differs, most on small images; its per-position map agrees with ours inside the image.
    Per image: mean over channels and positions; reduction="mean" then averages over the batch.
    """
    x, y = _as_batch(x, y, "ssim")
    channels, height, width = x.shape[1:]
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {height}x{width}")
    c1 = (SSIM_K1 * data_range) ** 2  # keep the ratios stable where means or variances are near zero
    c2 = (SSIM_K2 * data_range) ** 2

    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA).to(x)
    window = window.expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)

    def local_mean(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=channels)  # groups=channels: each channel on its own

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y

    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    ssim_map = luminance * contrast_structure  # (B, C, H - 10, W - 10)
    return _reduce(ssim_map.mean(dim=(1, 2, 3)), reduction, "ssim")



def laplacian_sharpness(images: Tensor) -> Tensor:
    """Per image, the mean absolute response to the 3x3 Laplacian (4 at the centre, -1 at its 4 neighbours) on the
    grey level, for images in [-1, 1] (B, 3, H, W) -> (B,). Fine detail (strands of hair, eyelids) gives large
    responses and blur removes them, so a reconstruction's value relative to the original's measures sharpness:
    1 = as sharp as the original, < 1 blurrier. (It also rises with noise: look at the images too.)"""
    return _mean_abs_laplacian(images.float().mean(dim=1, keepdim=True))


def chroma_detail(images: Tensor) -> Tensor:
    """Per image, the mean absolute 3x3 Laplacian response of the two colour-opponent channels, red - green and
    (red + green) / 2 - blue, for images in [-1, 1] (B, 3, H, W) -> (B,): fine detail in colour, not in brightness.
    A grey or flat-coloured region gives 0; colour speckle (isolated pixels of another hue, what a GAN-tuned decoder
    paints into irises) gives large responses. Like `laplacian_sharpness`, read a reconstruction's value relative to
    the original's: > 1 = more fine colour detail than the real faces have. It cannot tell speckle from a sharper
    true colour edge: look at the crops too."""
    from facegen.data.transforms import to_opponent

    return _mean_abs_laplacian(to_opponent(images.float())[:, 1:])


def _mean_abs_laplacian(channels: Tensor) -> Tensor:
    """(B, C, H, W) -> (B,): the mean absolute response of each channel to the 3x3 Laplacian (4 at the centre, -1 at
    its 4 neighbours), over channels and valid positions."""
    kernel = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], device=channels.device)
    n = channels.shape[1]
    return F.conv2d(channels, kernel.expand(n, 1, 3, 3), groups=n).abs().mean(dim=(1, 2, 3))


@torch.no_grad()
def reconstruction_metrics(tokenizer: torch.nn.Module, images: Tensor, codebook_size: int,
                           batch_size: int = 64) -> dict:
    """How well a tokenizer (anything with `encode_indices` / `decode_indices`, e.g. the VQ-VAE or a VQGAN) round-trips
    uint8 images (N, 3, H, W) through its tokens: PSNR and SSIM, codebook usage (share of the `codebook_size` codes
    used, perplexity, dead codes) and sharpness (the reconstructions' `laplacian_sharpness` over the originals').
    Batches run on the tokenizer's device; the per-image numbers are gathered on the CPU in float64."""
    from facegen.data.transforms import from_uint8

    device = next(tokenizer.parameters()).device
    was_training = tokenizer.training
    tokenizer.eval()
    psnrs, ssims, codes, sharp_recon, sharp_real = [], [], [], [], []
    try:
        for start in range(0, len(images), batch_size):
            x = from_uint8(images[start:start + batch_size].to(device)).contiguous(memory_format=torch.channels_last)
            indices = tokenizer.encode_indices(x)
            recon = tokenizer.decode_indices(indices).float().clamp(-1, 1)
            psnrs.append(psnr(recon, x, reduction="none").double().cpu())
            ssims.append(ssim(recon, x, reduction="none").double().cpu())
            codes.append(indices.flatten().cpu())
            sharp_recon.append(laplacian_sharpness(recon).double().cpu())
            sharp_real.append(laplacian_sharpness(x).double().cpu())
    finally:
        tokenizer.train(was_training)
    usage = codebook_usage(torch.cat(codes), codebook_size)
    return {"psnr": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean()),
            "usage": float(usage.used_fraction), "perplexity": float(usage.perplexity),
            "dead_codes": int(usage.dead_codes),
            "sharpness": float(torch.cat(sharp_recon).mean() / torch.cat(sharp_real).mean())}


@torch.no_grad()
def round_trip(tokenizer: torch.nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """uint8 images (N, 3, H, W) through a tokenizer's tokens (`decode_indices(encode_indices(x))`, in batches on its
    device, eval mode): the reconstructions as floats in [-1, 1] on the CPU, e.g. to judge what the tokens keep."""
    from facegen.data.transforms import from_uint8

    device = next(tokenizer.parameters()).device
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        return torch.cat([
            tokenizer.decode_indices(tokenizer.encode_indices(
                from_uint8(images[start:start + batch_size].to(device)).contiguous(memory_format=torch.channels_last)
            )).float().clamp(-1, 1).cpu()
            for start in range(0, len(images), batch_size)])
    finally:
        tokenizer.train(was_training)


# ------------------------------------------------------------------------------------ judging samples with a classifier
# `classifier` below is any module with `attributes` (names), `forward(images) -> logits (B, A)` and
# `features(images) -> (B, F)`, e.g. facegen.classifier.AttributeClassifier. Images are uint8 (N, 3, H, W) or floats
# in [-1, 1].

__all__ += ["classifier_outputs", "requested_targets", "prediction_accuracy", "attribute_accuracy",
            "feature_statistics", "frechet_distance", "frechet_feature_distance"]


@torch.no_grad()
def classifier_outputs(classifier: torch.nn.Module, images: Tensor, batch_size: int = 256,
                       features: bool = False) -> Tensor:
    """Logits (N, A), or with `features=True` the pooled features (N, F), of `classifier` in eval mode, computed
    `batch_size` images at a time on the classifier's device (uint8 batches are moved before they are scaled, a
    quarter of the bytes); returned on the CPU in float32. The module's train/eval mode is restored."""
    from facegen.data.transforms import from_uint8

    if images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"classifier_outputs: expected images (N, 3, H, W) with N >= 1, got shape "
                         f"{tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"classifier_outputs: batch_size must be >= 1, got {batch_size}")
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    outputs = []
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device, non_blocking=True)
            batch = from_uint8(batch) if batch.dtype == torch.uint8 else batch.float()
            batch = batch.contiguous(memory_format=torch.channels_last)
            outputs.append((classifier.features(batch) if features else classifier(batch)).float().cpu())
    finally:
        classifier.train(was_training)
    return torch.cat(outputs)


def requested_targets(requested, n_images: int, attributes: tuple[str, ...]) -> Tensor:
    """What was asked of each image as an (N, A) long tensor of 1 (present), 0 (absent), -1 (not specified).

    `requested` is either one dict for every image, {name: 0, 1, None or "?"} (names not given are unspecified),
    or already an (N, A) tensor of 0 / 1 / -1 in the order of `attributes`."""
    attributes = tuple(attributes)
    if isinstance(requested, dict):
        unknown = [name for name in requested if name not in attributes]
        if unknown:
            raise KeyError(f"requested attributes {unknown} are not among the classifier's: {', '.join(attributes)}")
        row = torch.full((len(attributes),), -1, dtype=torch.long)
        for name, value in requested.items():
            if value is None or value == "?":
                continue
            if isinstance(value, bool) or value not in (0, 1):
                raise ValueError(f"requested[{name!r}] must be 0, 1, None or '?', got {value!r} (CelebA's -1 means "
                                 "absent there, so it is not accepted here: write 0)")
            row[attributes.index(name)] = int(value)
        return row.expand(n_images, -1).clone()
    targets = torch.as_tensor(requested)
    if targets.shape != (n_images, len(attributes)) or targets.is_floating_point():
        raise ValueError(f"requested: expected a dict or an integer tensor of shape ({n_images}, {len(attributes)}) "
                         f"with 1 / 0 / -1 (unspecified), got {targets.dtype} {tuple(targets.shape)}")
    if not bool(((targets == 0) | (targets == 1) | (targets == -1)).all()):
        found = sorted(targets.unique().tolist())
        raise ValueError(f"requested: values must be 1, 0 or -1 (unspecified), got {found}")
    return targets.long()


def prediction_accuracy(predicted: Tensor, targets: Tensor, attributes: tuple[str, ...]) -> dict:
    """Accuracy of 0/1 predictions (N, A) against targets (N, A) of 1 / 0 / -1, ignoring the -1 (unspecified).

    Returns {"per_attribute": {name: accuracy}, "count": {name: specified images}, "mean": ...}; attributes never
    specified are left out, and "mean" is the plain average over the attributes that are present (each attribute
    counts the same, however many images asked for it); NaN when nothing was specified."""
    if predicted.shape != targets.shape or predicted.shape[-1] != len(attributes):
        raise ValueError(f"prediction_accuracy: predicted {tuple(predicted.shape)} and targets "
                         f"{tuple(targets.shape)} must both be (N, {len(attributes)})")
    specified = targets != -1
    correct = (predicted.long() == targets) & specified
    counts = specified.sum(dim=0)
    per_attribute = {name: correct[:, j].sum().item() / counts[j].item()
                     for j, name in enumerate(attributes) if counts[j] > 0}
    mean = sum(per_attribute.values()) / len(per_attribute) if per_attribute else float("nan")
    return {"mean": mean, "per_attribute": per_attribute,
            "count": {name: int(counts[j]) for j, name in enumerate(attributes) if counts[j] > 0}}


def attribute_accuracy(classifier: torch.nn.Module, images: Tensor, requested, batch_size: int = 256) -> dict:
    """How often the classifier sees what was requested: see `requested_targets` for `requested` and
    `prediction_accuracy` for the result. A prediction is "present" where the logit is positive (p > 0.5)."""
    targets = requested_targets(requested, len(images), classifier.attributes)
    predicted = classifier_outputs(classifier, images, batch_size=batch_size) > 0
    return prediction_accuracy(predicted, targets, classifier.attributes)


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and covariance (F, F) of features (N, F), in float64; the covariance uses N - 1, as FID does."""
    features = torch.as_tensor(features)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"feature_statistics: expected features (N, F) with N >= 2, got shape {tuple(features.shape)}")
    features = features.double()
    return features.mean(dim=0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix from its eigen-decomposition; the tiny negative
    eigenvalues that rounding creates are set to 0."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), the formula of FID:

        ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    sigma1 sigma2 is not symmetric, but it is similar to S = sigma1^(1/2) sigma2 sigma1^(1/2), which is symmetric
    positive semi-definite, so tr((sigma1 sigma2)^(1/2)) = sum of sqrt(eigenvalues of S): two symmetric eigen-
    decompositions in float64, no complex numbers and no scipy. The result is clamped at 0 (rounding can leave
    -1e-12)."""
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    sigma1, sigma2 = torch.as_tensor(sigma1).double(), torch.as_tensor(sigma2).double()
    size = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, value, shape in (("mu1", mu1, (size,)), ("mu2", mu2, (size,)), ("sigma1", sigma1, (size, size)),
                               ("sigma2", sigma2, (size, size))):
        if tuple(value.shape) != shape:
            raise ValueError(f"frechet_distance: {name} has shape {tuple(value.shape)}; expected means (F,) and "
                             f"covariances (F, F) with one F, here F = {size}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"frechet_distance: {name} holds NaN or inf")
    root1 = _sqrt_psd((sigma1 + sigma1.T) / 2)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)


def frechet_feature_distance(classifier: torch.nn.Module, images_a: Tensor, images_b: Tensor,
                             batch_size: int = 256) -> float:
    """Frechet distance between the classifier's pooled features of two image sets (the idea of FID, with our
    classifier in place of Inception). It shrinks with more images even between samples of one distribution, so
    compare numbers made with equal set sizes."""
    stats_a = feature_statistics(classifier_outputs(classifier, images_a, batch_size, features=True))
    stats_b = feature_statistics(classifier_outputs(classifier, images_b, batch_size, features=True))
    return frechet_distance(*stats_a, *stats_b)


def unigram_entropy(codes: Tensor, codebook_size: int) -> float:
    """Entropy in nats of the code frequencies in `codes` (any shape of ids in 0..codebook_size-1): the loss per
    token of a model that knows how often each code occurs but ignores context; a GPT must go below it. The other
    baseline, knowing nothing, is ln(codebook_size)."""
    codes = torch.as_tensor(codes).flatten().long()
    if codes.numel() == 0 or codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"unigram_entropy: codes must be ids in 0..{codebook_size - 1}; got "
                         f"{'none' if codes.numel() == 0 else f'{int(codes.min())}..{int(codes.max())}'}")
    p = torch.bincount(codes, minlength=codebook_size).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


# --- Uncertainty: every evaluation number on a finite sample of requests comes with a 95% interval.

__all__ += ["attribute_agreement", "proportion_interval", "bootstrap_interval", "accuracy_report",
            "frechet_with_interval"]


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion `successes / n` (scipy's binomtest): unlike p +- 1.96 sqrt(p(1-p)/n)
    it stays inside [0, 1] and is honest at 0% and 100%. (nan, nan) for n = 0."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise ValueError(f"proportion_interval: successes must lie in 0..n = {n}, got {successes}")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(statistic, n: int, confidence: float = 0.95, resamples: int = 1000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (scipy.stats.bootstrap) of `statistic(rows)`, a function of a LongTensor of row
    indices into n items (rows drawn with replacement). Resampling whole rows keeps what belongs together (all the
    attributes of one request, one face's features) together."""
    import numpy as np
    from scipy.stats import bootstrap

    if n < 2:
        raise ValueError(f"bootstrap_interval: needs n >= 2 items, got {n}")
    result = bootstrap((np.arange(n),), lambda rows: statistic(torch.as_tensor(rows, dtype=torch.long)),
                       vectorized=False, n_resamples=resamples, confidence_level=confidence, method="percentile",
                       random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def accuracy_report(predicted: Tensor, targets: Tensor, attributes: tuple[str, ...], confidence: float = 0.95,
                    resamples: int = 1000) -> dict:
    """Per-attribute accuracy of 0/1 predictions (N, A) against targets of 1 / 0 / -1 (unspecified), each with a
    Wilson interval, over all specified requests, over those asking the attribute to be present, and over those
    asking it absent (present-only accuracy alone rewards a model that always draws a common attribute: read it with
    the absent side); and the all and present-only means over attributes with a bootstrap interval over requests.

    Returns {"rows": [{"attribute", "n", "accuracy", "interval", "n_present", "present", "present_interval",
    "n_absent", "absent", "absent_interval"}],
    "mean": (value, (low, high)), "present_mean": (value, (low, high))}."""
    targets = torch.as_tensor(targets).long()
    predicted = torch.as_tensor(predicted).long()
    present_targets = torch.where(targets == 1, 1, -1)
    rows = []
    for j, name in enumerate(attributes):
        asked, present, absent = targets[:, j] != -1, targets[:, j] == 1, targets[:, j] == 0
        hits = predicted[:, j] == targets[:, j]
        n = int(asked.sum())
        if n == 0:
            continue
        row = {"attribute": name, "n": n, "accuracy": int((hits & asked).sum()) / n,
               "interval": proportion_interval(int((hits & asked).sum()), n, confidence)}
        for side, wanted in (("present", present), ("absent", absent)):
            count, right = int(wanted.sum()), int((hits & wanted).sum())
            row[f"n_{side}"] = count
            row[side] = right / count if count else float("nan")
            row[f"{side}_interval"] = proportion_interval(right, count, confidence)
        rows.append(row)

    def mean_over(target_rows):
        return lambda rows_: prediction_accuracy(predicted[rows_], target_rows[rows_], attributes)["mean"]

    report = {"rows": rows}
    for key, target_rows in (("mean", targets), ("present_mean", present_targets)):
        value = mean_over(target_rows)(torch.arange(len(targets)))
        report[key] = (value, bootstrap_interval(mean_over(target_rows), len(targets), confidence, resamples))
    return report


def attribute_agreement(classifier: torch.nn.Module, originals: Tensor, reconstructions: Tensor,
                        confidence: float = 0.95) -> dict:
    """A tokenizer's per-attribute ceiling: on how many faces `classifier` gives the same yes/no answer for the
    reconstruction as for the original, per attribute, with Wilson intervals. What the tokens lose here, no GPT
    writing those tokens can show. Judge with a classifier that is in no loss of the tokenizer.

    Returns {"agree": bool (N, A), "share": {attribute: float}, "interval": {attribute: (low, high)},
    "mean": float, "lowest": (attribute, float)}."""
    if len(originals) != len(reconstructions):
        raise ValueError(f"attribute_agreement: {len(originals)} originals but {len(reconstructions)} reconstructions")
    agree = (classifier_outputs(classifier, originals) > 0) == (classifier_outputs(classifier, reconstructions) > 0)
    counts = agree.sum(0).tolist()
    share = {name: count / len(agree) for name, count in zip(classifier.attributes, counts)}
    interval = {name: proportion_interval(count, len(agree), confidence)
                for name, count in zip(classifier.attributes, counts)}
    lowest = min(share, key=share.get)
    return {"agree": agree, "share": share, "interval": interval, "mean": sum(share.values()) / len(share),
            "lowest": (lowest, share[lowest])}


def frechet_with_interval(features_a: Tensor, features_b: Tensor, confidence: float = 0.95,
                          resamples: int = 100, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Frechet distance between two feature sets (N, F) and (M, F), with an approximate interval from half-sampling.

    The usual bootstrap fails here: a resample repeats images, which shrinks its covariance, so resampled distances
    sit far above the estimate (tried: intervals that miss it, or go negative). Instead, the distance is recomputed
    on `resamples` random halves of both sets drawn without replacement; the spread of a statistic over half-samples
    is about sqrt(2) times its spread over full samples, so the interval is d +- z * sd(halves) / sqrt(2), z from
    the normal distribution. It shows how much the number would move with other images of the same kind; it says
    nothing about the distance's bias at this N (even two samples of one distribution are apart): compare with a
    floor of the same N."""
    from scipy.stats import norm

    features_a, features_b = torch.as_tensor(features_a).double(), torch.as_tensor(features_b).double()
    if min(len(features_a), len(features_b)) < 4:
        raise ValueError(f"frechet_with_interval: needs at least 4 feature rows per set, got {len(features_a)} and "
                         f"{len(features_b)}")
    value = frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
    generator = torch.Generator().manual_seed(seed)
    halves = []
    for _ in range(resamples):
        rows_a = torch.randperm(len(features_a), generator=generator)[:len(features_a) // 2]
        rows_b = torch.randperm(len(features_b), generator=generator)[:len(features_b) // 2]
        halves.append(frechet_distance(*feature_statistics(features_a[rows_a]),
                                       *feature_statistics(features_b[rows_b])))
    half_width = float(norm.ppf(0.5 + confidence / 2)) * float(torch.tensor(halves).std()) / 2 ** 0.5
    return value, (value - half_width, value + half_width)
