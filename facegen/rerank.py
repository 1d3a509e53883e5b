"""Best of k: draw several faces per request and keep the one an attribute classifier finds closest to the request.

The idea is old and cheap: the taming-transformers paper samples its class-conditional ImageNet model with "rejection
sampling" by a ResNet classifier, and DALL-E draws many images per caption and keeps those CLIP ranks highest. The
generator is not changed; only which of its samples is shown. It costs k times the sampling.

`request_log_likelihood` scores an image against a request: the sum, over the attributes the request names, of
log sigmoid(+logit) for an attribute asked present and log sigmoid(-logit) for one asked absent: the
log-probability of the whole request if the classifier's attribute outputs were independent. Attributes the request
leaves unspecified (`?`) do not count. `sample_best_of` draws k rounds of `sample_faces` (round c with seed + c, so
round 0 is exactly the plain call's batch) and keeps, per request, the round with the highest score.

The ranker is a judge that took part: any evaluation of reranked faces must use another network (notebook 06 uses
the judge classifier, trained from another seed), and even that one shares the ranker's training data and blind
spots, so it will see some of the ranker's preferences as success.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from facegen import metrics
from facegen.sampling import sample_faces
from facegen.tokens import Vocabulary


def request_log_likelihood(logits: Tensor, requests: Sequence[Mapping[str, int]], names: Sequence[str]) -> Tensor:
    """(N,) log-likelihood of each request under a classifier's logits (N, A), whose columns are `names`: sum over
    the attributes a request sets to 1 (present) or 0 (absent) of log sigmoid(+-logit); unset ones (missing, None or
    "?") add nothing, so an empty request scores 0. Requests are read by `metrics.requested_targets`: a name the
    classifier does not output, or a value other than 0 / 1 / None / "?", is an error, not a silent zero."""
    if logits.ndim != 2 or logits.shape != (len(requests), len(names)):
        raise ValueError(f"request_log_likelihood: logits must be (requests, attributes) = ({len(requests)}, "
                         f"{len(names)}), got {tuple(logits.shape)}")
    targets = torch.cat([metrics.requested_targets(dict(request), 1, tuple(names)) for request in requests])
    sign = (targets == 1).to(logits.dtype) - (targets == 0).to(logits.dtype)  # +1 present, -1 absent, 0 unset
    return (F.logsigmoid(sign * logits) * sign.abs()).sum(dim=1)


@dataclass
class BestOf:
    """What `sample_best_of` returns: the chosen faces (N, 3, H, W) in [-1, 1] on the CPU, the first round's faces
    (exactly `sample_faces` with the same arguments: what reranking is compared with), every round's scores (N, k)
    and the round chosen per request (N,)."""

    faces: Tensor
    first: Tensor
    scores: Tensor
    chosen: Tensor


def sample_best_of(model, vocab: Vocabulary, vqvae, ranker: torch.nn.Module, requests: Sequence[Mapping[str, int]],
                   candidates: int = 4, seed: int = 0, first: Tensor | None = None, sampler: Callable | None = None,
                   **sample_kwargs) -> BestOf:
    """For each request, `candidates` faces from `sample_faces(model, vocab, vqvae, len(requests), requests,
    seed=seed + c, **sample_kwargs)`, c = 0 .. candidates - 1, and the one with the highest `request_log_likelihood`
    under `ranker` (an attribute classifier with an `attributes` list, e.g. `ensure_classifier`'s). Only one round of
    faces and the best so far are held at a time, so memory does not grow with `candidates`; ties keep the earlier
    round. `first`: round 0's faces when the caller already drew them with that very call (seed `seed`, the same
    settings), so they are not drawn again; nothing can check that they were. `sampler`: what draws a round, called
    like `sample_faces` with keywords (the explorer passes its own; default `sample_faces`)."""
    if candidates < 1:
        raise ValueError(f"sample_best_of: candidates must be >= 1, got {candidates}")
    if not requests:
        raise ValueError("sample_best_of: pass at least one request (a dict of attributes; {} for an unconditional "
                         "face)")
    if first is not None and (first.ndim != 4 or len(first) != len(requests)):
        raise ValueError(f"sample_best_of: first must be round 0's faces, ({len(requests)}, 3, H, W) for "
                         f"{len(requests)} requests; got shape {tuple(first.shape)}")
    names, sampler = list(ranker.attributes), sampler or sample_faces
    scores, best, best_score = [], None, None
    for round_ in range(candidates):
        if round_ == 0 and first is not None:
            faces = first
        else:
            faces = sampler(model, vocab, vqvae, n=len(requests), attributes=list(requests), seed=seed + round_,
                            **sample_kwargs)
        score = request_log_likelihood(metrics.classifier_outputs(ranker, faces), requests, names)
        scores.append(score)
        if round_ == 0:
            first, best, best_score = faces, faces.clone(), score.clone()
        else:
            better = score > best_score
            best[better], best_score[better] = faces[better], score[better]
    scores = torch.stack(scores, dim=1)
    return BestOf(faces=best, first=first, scores=scores, chosen=scores.argmax(dim=1))
