"""Sampling faces from the GPT: grammar-constrained generation, classifier-free guidance, completion.

Everything runs through Hugging Face's `model.generate()` (KV cache on by default), configured here:

- the prompt is `<START_FACE> <attributes> <START_GENERATION>` (+ the first `keep_tokens` image tokens of a face when
  completing one); attributes come from a dict such as {"Smiling": 1, "Eyeglasses": 0}, every other one is `?`;
- `ImageGrammar`, a `LogitsProcessor`, allows only image codes for the 256 positions after <START_GENERATION> and then
  only <END_GENERATION>, so every sample decodes (an untrained or unlucky model could otherwise write a special or
  attribute token among the codes, or stop early);
- classifier-free guidance is transformers' own: `guidance_scale` s with the all-`?` prompt (plus the same kept
  tokens) as `negative_prompt_ids`. Its `UnbatchedClassifierFreeGuidanceLogitsProcessor` runs the unconditional
  prompt alongside (with its own KV cache) and combines log-probabilities, u + s (c - u), with
  c = log_softmax(conditional logits) and u = log_softmax(unconditional logits): s = 1 is plain conditional
  sampling, s = 0 unconditional, s > 1 pushes samples towards what the attributes ask for;
- then, in generate's order: guidance, the grammar, temperature, top-k, top-p (the last three are transformers'
  warpers; temperature 0 means greedy decoding);
- the random numbers come from a private generator state seeded with `seed`, so the same call gives the same batch
  whatever ran before, and the caller's RNG is left as it was.

Device and precision: everything runs on the model's device (prompts, masks and the random state are made there; the
sequences come back to the CPU once, at the end), in the model's own dtype, with no autocast. On one H200, bf16
autocast made sampling 5x slower than fp32 (issue 13): generation is one token at a time for a few hundred tokens,
so it is bound by per-step overhead, and autocast adds a cast of every weight at every step. The `ensure_gpt` loader
keeps the weights in fp32; to sample in bf16, cast the model once (`model.to(torch.bfloat16)`), not per step.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Mapping, Sequence

import torch
import transformers
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from facegen.attributes import CONDITIONING_ATTRIBUTES
from facegen.tokens import Vocabulary

__all__ = ["ImageGrammar", "prompt_batch", "parse_attributes", "generation_inputs", "sample_sequences", "sample_codes", "sample_faces"]


CACHE_KINDS = ("dynamic", "static")


class ImageGrammar(LogitsProcessor):
    """Masks every token the sequence format does not allow at the next position: image codes for the grid**2
    positions after <START_GENERATION>, then <END_GENERATION>. The position is the length of `input_ids` (every row
    of a batch has the same length: the prompts are all `image_start + keep_tokens` long)."""

    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self._masks = {}  # (size, device, is_end) -> bool mask, built once per device instead of once per token

    def allowed(self, position: int, size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool (size,) on `device` (default CPU): the tokens allowed at `position` of a sequence (size = the
        model's vocab_size)."""
        v = self._check_position(position)
        allowed = torch.zeros(size, dtype=torch.bool, device=device)
        if position < v.end_position:
            allowed[:v.codebook_size] = True
        else:
            allowed[v.end_generation_id] = True
        return allowed

    def _check_position(self, position: int) -> Vocabulary:
        v = self.vocab
        if not v.image_start <= position <= v.end_position:
            raise ValueError(f"ImageGrammar: position {position} is outside the generated part of a sequence "
                             f"({v.image_start} .. {v.end_position})")
        return v

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        position, size = input_ids.shape[1], scores.shape[-1]
        key = (size, scores.device, self._check_position(position).end_position == position)
        if key not in self._masks:
            self._masks[key] = ~self.allowed(position, size, scores.device)
        return scores.masked_fill(self._masks[key], -math.inf)


class _StepProgress(LogitsProcessor):
    """Advances a progress bar once per generated token (it leaves the scores alone)."""

    def __init__(self, bar):
        self.bar = bar

    def __call__(self, input_ids, scores):
        self.bar.update(1)
        return scores


# ------------------------------------------------------------------------------------------------------- prompts


def _attribute_rows(attributes, n: int) -> list:
    """`attributes` as n per-sample requests: None, one dict for all, or a sequence of n dicts / None."""
    if attributes is None or isinstance(attributes, Mapping):
        return [attributes] * n
    if isinstance(attributes, Sequence) and not isinstance(attributes, str) \
            and all(a is None or isinstance(a, Mapping) for a in attributes):
        if len(attributes) != n:
            raise ValueError(f"attributes: {len(attributes)} dicts for n={n} samples; give one dict for all samples "
                             "or exactly n")
        return list(attributes)
    raise ValueError(f"attributes must be None, a dict such as {{'Smiling': 1, 'Eyeglasses': 0}} (values 0, 1 or "
                     f"'?'), or a list of n such dicts; got {type(attributes).__name__}")


def _check_prefix(vocab: Vocabulary, n: int, prefix_codes, keep_tokens) -> torch.Tensor | None:
    """The first `keep_tokens` codes of each sample in raster order, (n, keep_tokens), or None."""
    total = vocab.n_image_tokens
    if isinstance(keep_tokens, bool) or not isinstance(keep_tokens, numbers.Integral) or not 0 <= keep_tokens <= total:
        raise ValueError(f"keep_tokens must be an integer in [0, {total}] (image tokens to keep), got {keep_tokens!r}")
    if prefix_codes is None:
        if keep_tokens:
            raise ValueError(f"keep_tokens={keep_tokens} needs prefix_codes, the faces (n or 1, {vocab.grid_size}, "
                             f"{vocab.grid_size}) whose first tokens are kept")
        return None
    codes = torch.as_tensor(prefix_codes)
    grid = vocab.grid_size
    if codes.ndim == 2:
        codes = codes.unsqueeze(0)
    if codes.ndim != 3 or tuple(codes.shape[1:]) != (grid, grid) or len(codes) not in (1, n) \
            or codes.is_floating_point() or codes.dtype == torch.bool:
        raise ValueError(f"prefix_codes must be integer codes shaped (n or 1, {grid}, {grid}) with n={n}; got "
                         f"{codes.dtype} {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= vocab.codebook_size):
        raise ValueError(f"prefix_codes must lie in [0, {vocab.codebook_size - 1}] (the codebook); got "
                         f"[{int(codes.min())}, {int(codes.max())}]")
    return codes.long().reshape(len(codes), -1)[:, :keep_tokens].expand(n, -1).cpu()


def prompt_batch(vocab: Vocabulary, n: int, attributes=None, prefix_codes=None, keep_tokens: int = 0,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Prompts (n, image_start + keep_tokens) on `device` (default CPU): `<START_FACE> <attributes>
    <START_GENERATION>` and, for completion, the first `keep_tokens` image tokens of `prefix_codes` (n or 1 code
    grids) in raster order. Assembled on the CPU from Python values, then moved in one copy."""
    rows = _attribute_rows(attributes, n)
    prompts = torch.stack([vocab.prompt_ids(row) for row in rows])
    kept = _check_prefix(vocab, n, prefix_codes, keep_tokens)
    prompts = prompts if kept is None else torch.cat([prompts, kept], dim=1)
    return prompts if device is None else prompts.to(device)


def parse_attributes(settings: Sequence[str], names: Sequence[str] = CONDITIONING_ATTRIBUTES) -> dict:
    """["Smiling=1", "Eyeglasses=0", "Bald=?"] (the CLI's --attr) -> {"Smiling": 1, "Eyeglasses": 0, "Bald": "?"};
    one clear error for a malformed setting, an unknown name (listing the valid ones) or a repeated name."""
    attributes = {}
    for setting in settings:
        name, equals, value = setting.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or value not in ("0", "1", "?"):
            raise ValueError(f"--attr {setting!r}: expected NAME=VALUE with VALUE 0, 1 or ?, e.g. Smiling=1")
        if name not in names:
            raise ValueError(f"--attr {setting!r}: unknown conditioning attribute {name!r}; valid names: "
                             f"{', '.join(names)}")
        if name in attributes:
            raise ValueError(f"--attr {setting!r}: {name} is set twice")
        attributes[name] = value if value == "?" else int(value)
    return attributes


# ---------------------------------------------------------------------------------------------------- generation


def _check_settings(n, guidance_scale, temperature, top_k, top_p) -> None:
    def real(value) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer (samples in the batch), got {n!r}")
    if not real(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance, 0 = unconditional), got "
                         f"{guidance_scale!r}")
    if not real(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"top_k must be None (off) or an integer >= 1, got {top_k!r}")
    if top_p is not None and (not real(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be None (off) or a number in (0, 1], got {top_p!r}")


def generation_inputs(model, vocab: Vocabulary, n: int = 16, attributes=None, *, guidance_scale: float = 1.0,
                      temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                      prefix_codes: torch.Tensor | None = None, keep_tokens: int = 0, use_cache: bool = True,
                      constrained: bool = True, cache: str = "dynamic") -> dict:
    """The keyword arguments of `model.generate(**inputs)` for a batch (see `sample_codes` for the settings):
    input_ids, negative_prompt_ids (the unconditional prompt, when guided), generation_config and logits_processor.
    `constrained=False` leaves the grammar out (to show what it prevents)."""
    _check_settings(n, guidance_scale, temperature, top_k, top_p)
    if cache not in CACHE_KINDS:
        raise ValueError(f"cache must be one of {', '.join(CACHE_KINDS)}, got {cache!r}")
    if model.config.vocab_size != vocab.size:
        raise ValueError(f"the model's vocab_size {model.config.vocab_size} does not match the vocabulary's "
                         f"{vocab.size} tokens")
    device = next(model.parameters()).device
    prompts = prompt_batch(vocab, n, attributes, prefix_codes, keep_tokens, device=device)
    greedy = temperature == 0
    config = GenerationConfig(
        max_new_tokens=vocab.length - prompts.shape[1],  # the remaining image tokens + <END_GENERATION>
        do_sample=not greedy, use_cache=use_cache, guidance_scale=None if guidance_scale == 1 else guidance_scale,
        eos_token_id=vocab.end_generation_id, pad_token_id=vocab.pad_id, bos_token_id=vocab.start_face_id,
        **({} if greedy else {"temperature": temperature, "top_k": top_k or 0, "top_p": top_p or 1.0}),
        **({"cache_implementation": "static"} if cache == "static" and use_cache else {}))
    inputs = {"input_ids": prompts, "attention_mask": torch.ones_like(prompts),
              "generation_config": config,
              "logits_processor": LogitsProcessorList([ImageGrammar(vocab)] if constrained else [])}
    if guidance_scale != 1:
        unconditional = prompt_batch(vocab, n, None, prefix_codes, keep_tokens, device=device)
        inputs["negative_prompt_ids"] = unconditional
        inputs["negative_prompt_attention_mask"] = torch.ones_like(unconditional)
    return inputs


@contextlib.contextmanager
def _quiet_padding(constrained: bool):
    """Without the grammar a row can stop early; generate then feeds <PAD> after its end, and transformers warns
    (on stderr, once) that padded inputs want an attention mask. Harmless here: nothing after the end is used."""
    level = transformers.logging.get_verbosity()
    if not constrained:
        transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def sample_sequences(model, vocab: Vocabulary, n: int = 16, attributes=None, *, guidance_scale: float = 1.0,
                     temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                     prefix_codes: torch.Tensor | None = None, keep_tokens: int = 0, use_cache: bool = True,
                     constrained: bool = True, progress: bool = False, cache: str = "dynamic") -> torch.Tensor:
    """Whole sequences (n, vocab.length), LongTensor on the CPU: prompt, image tokens, <END_GENERATION>. Generated
    on the model's device in its own dtype (no autocast; see the module docstring).
    With `constrained=False` (no grammar) a sequence may stop early: it is then padded with <PAD> to the full length
    and `vocab.decode_sequence` rejects it."""
    inputs = generation_inputs(model, vocab, n, attributes, guidance_scale=guidance_scale, temperature=temperature,
                               top_k=top_k, top_p=top_p, prefix_codes=prefix_codes, keep_tokens=keep_tokens,
                               use_cache=use_cache, constrained=constrained, cache=cache)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    steps = inputs["generation_config"].max_new_tokens
    device = inputs["input_ids"].device
    bar = tqdm(total=steps, desc=f"sampling {n} faces", unit="token", disable=not progress, leave=False)
    inputs["logits_processor"].append(_StepProgress(bar))
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), _quiet_padding(constrained):
            torch.manual_seed(seed)
            sequences = model.generate(**inputs)
    finally:
        bar.close()
        model.train(was_training)
    sequences = sequences.cpu()
    if sequences.shape[1] < vocab.length:  # stopped early at <END_GENERATION> (only possible without the grammar)
        padding = torch.full((n, vocab.length - sequences.shape[1]), vocab.pad_id, dtype=sequences.dtype)
        sequences = torch.cat([sequences, padding], dim=1)
    return sequences


def sample_codes(model, vocab: Vocabulary, n: int = 16, attributes: Mapping[str, int] | None = None, *,
                 guidance_scale: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int = 0, prefix_codes: torch.Tensor | None = None,
                 keep_tokens: int = 0, use_cache: bool = True, progress: bool = False,
                 cache: str = "dynamic") -> torch.Tensor:
    """n sampled faces as codebook indices, LongTensor (n, grid, grid) on the CPU.

    - attributes: {"Smiling": 1, "Eyeglasses": 0} (values 0, 1, None or "?"); the others are "?". None: all "?".
      A list of n such dicts asks something different of each sample.
    - guidance_scale: classifier-free guidance s in u + s (c - u) on log-probabilities (1: off).
    - temperature (0: greedy, the most likely code at every step), top_k (keep the k most likely codes), top_p
      (keep the smallest set of codes whose probability reaches p).
    - seed: the same seed and settings give the same batch.
    - prefix_codes (n or 1, grid, grid) with keep_tokens N: completion; the first N image tokens in raster order are
      kept exactly and the rest is sampled.
    - use_cache: the KV cache (off only to measure what it saves).
    - cache: "dynamic" (grows token by token, the default) or "static" (allocated once for the whole sequence; on a
      GPU transformers then compiles the decoding step, which cuts the per-token overhead that bounds small batches;
      measured by benchmarks/gpu_check.py, not yet on a GPU). Both give the same faces.
    """
    sequences = sample_sequences(model, vocab, n, attributes, guidance_scale=guidance_scale, temperature=temperature,
                                 top_k=top_k, top_p=top_p, seed=seed, prefix_codes=prefix_codes,
                                 keep_tokens=keep_tokens, use_cache=use_cache, progress=progress, cache=cache)
    return sequences[:, vocab.image_start:vocab.end_position].reshape(n, vocab.grid_size, vocab.grid_size)


def sample_faces(model, vocab: Vocabulary, vqvae, n: int = 16, attributes=None, **kwargs) -> torch.Tensor:
    """`sample_codes` decoded by the VQ-VAE on its own device: images (n, 3, 8 grid, 8 grid) in [-1, 1], returned on
    the CPU (for display and saving)."""
    codes = sample_codes(model, vocab, n, attributes, **kwargs)
    device = next(vqvae.parameters()).device
    return vqvae.decode_indices(codes.to(device)).cpu()
