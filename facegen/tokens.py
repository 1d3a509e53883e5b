"""The vocabulary and the sequence format: the ONE place that says what the GPT reads and writes.

    <START_FACE> <Bald=?> <Bangs=1> ... <Young=0> <START_GENERATION> <c17> <c402> ... (256 codes) <END_GENERATION>

Ids, in order:
- 0 .. K-1: the image tokens `<c0>` .. `<c{K-1}>`; the id IS the VQ-VAE codebook index, so no lookup is needed.
- K .. K+3: the specials `<START_FACE>`, `<START_GENERATION>`, `<END_GENERATION>`, `<PAD>`.
- then three tokens per conditioning attribute, in `CONDITIONING_ATTRIBUTES` order: `<Name=0>`, `<Name=1>`, `<Name=?>`.

Every sequence lists every conditioning attribute (`?` when unspecified), so every token has a fixed position:
with 18 attributes and a 16x16 grid a sequence is 1 + 18 + 1 + 256 + 1 = 277 tokens long. Training replaces
attributes by `?` at random (`drop_attributes`): the model then also learns the unconditional distribution
(all `?`), which is what classifier-free guidance and "fix only some attributes" need.

`build_hf_tokenizer` packages the same vocabulary as a `transformers.PreTrainedTokenizerFast`, so it saves and loads
next to the GPT with `save_pretrained` / `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from facegen.attributes import CELEBA_ATTRIBUTES, CONDITIONING_ATTRIBUTES

START_FACE = "<START_FACE>"
START_GENERATION = "<START_GENERATION>"
END_GENERATION = "<END_GENERATION>"
PAD = "<PAD>"
SPECIALS = (START_FACE, START_GENERATION, END_GENERATION, PAD)
IGNORE_INDEX = -100  # label of positions that do not count in the loss (what Hugging Face's cross-entropy skips)
UNSPECIFIED = "?"
VALUES = (0, 1, UNSPECIFIED)  # the order of an attribute's three tokens


def code_token(index: int) -> str:
    """The token string of codebook index `index`: `<c17>`."""
    return f"<c{index}>"


def attribute_token(name: str, value) -> str:
    """`<Smiling=1>`, `<Smiling=0>` or `<Smiling=?>` (value None or "?")."""
    return f"<{name}={UNSPECIFIED if value is None else value}>"


@dataclass(frozen=True)
class Vocabulary:
    """Token ids and positions of the sequence format for a codebook of `codebook_size` codes."""

    codebook_size: int
    attributes: tuple[str, ...] = CONDITIONING_ATTRIBUTES
    grid_size: int = 16  # image tokens per side: a sequence holds grid_size**2 of them
    _attribute_column: dict = field(init=False, repr=False, compare=False)  # name -> position among `attributes`

    def __post_init__(self):
        if isinstance(self.codebook_size, bool) or not isinstance(self.codebook_size, int) or self.codebook_size < 1:
            raise ValueError(f"Vocabulary: codebook_size must be a positive integer, got {self.codebook_size!r}")
        unknown = [name for name in self.attributes if name not in CELEBA_ATTRIBUTES]
        if unknown or len(set(self.attributes)) != len(self.attributes):
            raise ValueError(f"Vocabulary: attributes must be distinct CelebA attribute names; got unknown "
                             f"{unknown} or repeats in {list(self.attributes)}")
        object.__setattr__(self, "attributes", tuple(self.attributes))
        object.__setattr__(self, "_attribute_column", {name: j for j, name in enumerate(self.attributes)})

    @classmethod
    def for_profile(cls, profile) -> "Vocabulary":
        """The vocabulary of a profile's VQ-VAE (its codebook size; the attributes and grid are fixed)."""
        return cls(profile.vqvae.codebook_size)

    # --- ids -------------------------------------------------------------------------------------------------------

    @property
    def n_attributes(self) -> int:
        return len(self.attributes)

    @property
    def start_face_id(self) -> int:
        return self.codebook_size

    @property
    def start_generation_id(self) -> int:
        return self.codebook_size + 1

    @property
    def end_generation_id(self) -> int:
        return self.codebook_size + 2

    @property
    def pad_id(self) -> int:
        return self.codebook_size + 3

    @property
    def first_attribute_id(self) -> int:
        return self.codebook_size + len(SPECIALS)

    @property
    def size(self) -> int:
        """Number of token ids (the GPT's vocab_size)."""
        return self.first_attribute_id + len(VALUES) * self.n_attributes

    def code_id(self, index: int) -> int:
        """The id of codebook index `index` (the same number, after a range check)."""
        if not 0 <= int(index) < self.codebook_size:
            raise ValueError(f"code index {index} is outside the codebook [0, {self.codebook_size - 1}]")
        return int(index)

    def attribute_column(self, name: str) -> int:
        """Position of `name` among the conditioning attributes; one clear error listing the valid names otherwise."""
        if name not in self._attribute_column:
            raise ValueError(f"unknown conditioning attribute {name!r}; valid names: {', '.join(self.attributes)}")
        return self._attribute_column[name]

    def attribute_id(self, name: str, value) -> int:
        """Id of `<name=value>`, value 0, 1, or None / "?" (unspecified)."""
        return self.first_attribute_id + len(VALUES) * self.attribute_column(name) + _value_offset(name, value)

    def tokens(self) -> list[str]:
        """Every token string, at the index of its id."""
        return ([code_token(i) for i in range(self.codebook_size)] + list(SPECIALS)
                + [attribute_token(name, value) for name in self.attributes for value in VALUES])

    def token(self, token_id: int) -> str:
        """The string of one id (for messages): `<c17>`, `<PAD>`, `<Smiling=1>`."""
        token_id = int(token_id)
        if token_id < 0 or token_id >= self.size:
            return f"id {token_id} (outside the vocabulary of {self.size})"
        if token_id < self.codebook_size:
            return code_token(token_id)
        if token_id < self.first_attribute_id:
            return SPECIALS[token_id - self.codebook_size]
        column, offset = divmod(token_id - self.first_attribute_id, len(VALUES))
        return attribute_token(self.attributes[column], VALUES[offset])

    # --- positions -------------------------------------------------------------------------------------------------

    @property
    def n_image_tokens(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def attribute_start(self) -> int:
        """Position of the first attribute token (right after <START_FACE>)."""
        return 1

    @property
    def start_generation_position(self) -> int:
        return self.attribute_start + self.n_attributes

    @property
    def image_start(self) -> int:
        """Position of the first image token; also the length of a prompt."""
        return self.start_generation_position + 1

    @property
    def end_position(self) -> int:
        """Position of <END_GENERATION>, right after the last image token."""
        return self.image_start + self.n_image_tokens

    @property
    def length(self) -> int:
        """Tokens in a sequence: 1 + n_attributes + 1 + grid_size**2 + 1."""
        return self.end_position + 1

    # --- encoding --------------------------------------------------------------------------------------------------

    def attribute_ids(self, attributes=None) -> torch.Tensor:
        """The n_attributes attribute-token ids for `attributes` given as
        - a dict {"Smiling": 1, "Eyeglasses": 0}: values 0, 1, or None / "?"; attributes left out are "?";
        - a CelebA vector of 40 values of -1/1 (all conditioning attributes set): -1 -> 0, 1 -> 1;
        - None: every attribute "?" (the unconditional prompt)."""
        if attributes is None:
            attributes = {}
        if isinstance(attributes, Mapping):
            return torch.tensor([self.attribute_id(name, v) for name, v in self._full_dict(attributes).items()])
        return self._celeba_attribute_ids(_as_celeba_matrix(attributes, batched=False))[0]

    def encode_sequence(self, attributes, codes) -> torch.Tensor:
        """One sequence, LongTensor (length,): attributes as in `attribute_ids`, codes (grid, grid) or (grid**2,)."""
        codes = self._check_codes(torch.as_tensor(codes), batched=False).reshape(1, -1)
        return self._assemble(self.attribute_ids(attributes).unsqueeze(0), codes)[0]

    def encode_batch(self, attributes, codes) -> torch.Tensor:
        """Sequences (B, length) from codes (B, grid, grid) or (B, grid**2) and attributes given as CelebA -1/1
        vectors (B, 40) (the tokenized dataset's `attributes` column) or a list of B dicts / None."""
        codes = self._check_codes(torch.as_tensor(codes), batched=True).reshape(len(codes), -1)
        if isinstance(attributes, (list, tuple)) and all(a is None or isinstance(a, Mapping) for a in attributes):
            rows = [self.attribute_ids(a) for a in attributes]
            attribute_ids = torch.stack(rows) if rows else torch.zeros((0, self.n_attributes), dtype=torch.long)
        else:
            attribute_ids = self._celeba_attribute_ids(_as_celeba_matrix(attributes, batched=True))
        if len(attribute_ids) != len(codes):
            raise ValueError(f"encode_batch: {len(attribute_ids)} attribute rows for {len(codes)} code grids; "
                             "expected one per image")
        return self._assemble(attribute_ids, codes)

    def prompt_ids(self, attributes=None) -> torch.Tensor:
        """The prefix a generation starts from, `<START_FACE> <attributes> <START_GENERATION>`: LongTensor
        (image_start,). Attributes as in `attribute_ids` (None: unconditional)."""
        attribute_ids = self.attribute_ids(attributes)
        return torch.cat([torch.tensor([self.start_face_id]), attribute_ids, torch.tensor([self.start_generation_id])])

    def _full_dict(self, attributes: Mapping) -> dict:
        for name in attributes:
            self.attribute_column(name)  # unknown names -> one error listing the valid ones
        return {name: attributes.get(name) for name in self.attributes}

    def _celeba_attribute_ids(self, matrix: torch.Tensor) -> torch.Tensor:
        """(B, 40) of -1/1 -> (B, n_attributes) ids: <Name=1> where 1, <Name=0> where -1."""
        columns = torch.tensor([CELEBA_ATTRIBUTES.index(name) for name in self.attributes], dtype=torch.long,
                               device=matrix.device)
        base = self.first_attribute_id + len(VALUES) * torch.arange(self.n_attributes, device=matrix.device)
        return base + (matrix[:, columns] == 1).long()

    def _check_codes(self, codes: torch.Tensor, batched: bool) -> torch.Tensor:
        grid, n = self.grid_size, self.n_image_tokens
        shape = tuple(codes.shape[1:] if batched and codes.ndim else codes.shape)
        if codes.is_floating_point() or codes.is_complex() or (batched and codes.ndim == 0) \
                or shape not in ((grid, grid), (n,)):
            lead = "B, " if batched else ""
            raise ValueError(f"codes must be integers shaped ({lead}{grid}, {grid}) or ({lead}{n},); got "
                             f"{codes.dtype} {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size - 1}] (the codebook); got "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        return codes.long()

    def _assemble(self, attribute_ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The sequences, on the codes' device (the attribute ids are small and may come from the CPU)."""
        batch, device = len(codes), codes.device
        column = lambda token_id: torch.full((batch, 1), token_id, dtype=torch.long, device=device)  # noqa: E731
        return torch.cat([column(self.start_face_id), attribute_ids.to(device), column(self.start_generation_id),
                          codes, column(self.end_generation_id)], dim=1)

    # --- decoding --------------------------------------------------------------------------------------------------

    def decode_sequence(self, ids) -> tuple[dict, torch.Tensor]:
        """(attributes {name: 0 / 1 / None}, codes LongTensor (grid, grid)) of one sequence; a malformed sequence
        raises one ValueError naming the first wrong position, what it holds and what was expected."""
        ids = torch.as_tensor(ids)
        if ids.ndim != 1 or ids.is_floating_point() or len(ids) != self.length:
            raise ValueError(f"a sequence must be {self.length} integer ids (1 + {self.n_attributes} attributes + 1 "
                             f"+ {self.n_image_tokens} image tokens + 1); got {ids.dtype} {tuple(ids.shape)}")
        ids = ids.long()
        for position, expected in ((0, self.start_face_id), (self.start_generation_position, self.start_generation_id),
                                   (self.end_position, self.end_generation_id)):
            if int(ids[position]) != expected:
                raise self._wrong(ids, position, self.token(expected))
        attributes = {}
        for column, name in enumerate(self.attributes):
            position = self.attribute_start + column
            offset = int(ids[position]) - self.attribute_id(name, 0)
            if not 0 <= offset < len(VALUES):
                raise self._wrong(ids, position, "one of " + ", ".join(attribute_token(name, v) for v in VALUES))
            attributes[name] = None if VALUES[offset] == UNSPECIFIED else VALUES[offset]
        codes = ids[self.image_start:self.end_position]
        bad = torch.nonzero((codes < 0) | (codes >= self.codebook_size)).flatten()
        if len(bad):
            raise self._wrong(ids, self.image_start + int(bad[0]), f"an image token <c0> .. "
                              f"{code_token(self.codebook_size - 1)} ({len(bad)} image positions hold other tokens)")
        return attributes, codes.reshape(self.grid_size, self.grid_size).clone()

    def _wrong(self, ids: torch.Tensor, position: int, expected: str) -> ValueError:
        return ValueError(f"malformed sequence: position {position} holds {self.token(int(ids[position]))}; "
                          f"expected {expected}")

    # --- training helpers ------------------------------------------------------------------------------------------

    def drop_attributes(self, ids: torch.Tensor, p_all: float, p_one: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """A copy of a batch of sequences (B, length) where attribute tokens became `?`: all of a sequence's with
        probability p_all, and each single one with probability p_one (classifier-free guidance training).
        Nothing else is touched."""
        for name, p in (("p_all", p_all), ("p_one", p_one)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"drop_attributes: {name} must be a probability in [0, 1], got {p}")
        if ids.ndim != 2 or ids.shape[1] != self.length:
            raise ValueError(f"drop_attributes: expected a batch of sequences (B, {self.length}), "
                             f"got {tuple(ids.shape)}")
        batch, n = len(ids), self.n_attributes
        # Drawn on the CPU (where the seeded generator lives, so a batch is the same on any device), then moved.
        drop_all = torch.rand(batch, 1, generator=generator) < p_all
        drop = (drop_all | (torch.rand(batch, n, generator=generator) < p_one)).to(ids.device)
        unspecified = (self.first_attribute_id + len(VALUES) * torch.arange(n) + VALUES.index(UNSPECIFIED)).to(ids.device)
        out = ids.clone()
        span = slice(self.attribute_start, self.attribute_start + n)
        out[:, span] = torch.where(drop, unspecified.expand(batch, n).to(ids.dtype), ids[:, span])
        return out

    def loss_mask(self, length: int | None = None) -> torch.Tensor:
        """Bool (length,): True at the positions whose token counts in the loss, the image tokens and
        <END_GENERATION>. The attributes and specials are given, not predicted."""
        length = self.length if length is None else length
        if not 0 <= length <= self.length:
            raise ValueError(f"loss_mask: length must be in [0, {self.length}], got {length}")
        mask = torch.zeros(self.length, dtype=torch.bool)
        mask[self.image_start:] = True
        return mask[:length]

    def labels(self, ids: torch.Tensor) -> torch.Tensor:
        """Labels for a Hugging Face causal LM: the ids where `loss_mask` is True, -100 elsewhere (the model shifts
        them itself: the logits at position t-1 are scored against label t)."""
        mask = self.loss_mask(ids.shape[-1]).to(ids.device)
        return torch.where(mask, ids, torch.full_like(ids, IGNORE_INDEX))


def _value_offset(name: str, value) -> int:
    if value is None or (isinstance(value, str) and value == UNSPECIFIED):
        return VALUES.index(UNSPECIFIED)
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and int(value) in (0, 1)):
        return int(value)
    raise ValueError(f"attribute {name}: value {value!r} is not one of 0, 1, None or '?'")


def _as_celeba_matrix(attributes, batched: bool) -> torch.Tensor:
    """CelebA attribute vectors as a (B, 40) tensor, after checking the shape and the -1/1 values."""
    matrix = torch.as_tensor(np.asarray(attributes))
    expected = "(B, 40)" if batched else "(40,)"
    if matrix.ndim != (2 if batched else 1) or matrix.shape[-1] != len(CELEBA_ATTRIBUTES) or matrix.is_floating_point():
        raise ValueError(f"attributes must be a dict, None, or CelebA integer vectors {expected} of -1/1; "
                         f"got {matrix.dtype} {tuple(matrix.shape)}")
    if not bool(((matrix == 1) | (matrix == -1)).all()):
        bad = sorted(set(matrix[(matrix != 1) & (matrix != -1)].tolist()))
        raise ValueError(f"CelebA attribute vectors must hold only -1 and 1; got also {bad[:5]}")
    return matrix.reshape(-1, len(CELEBA_ATTRIBUTES))


# --- the Hugging Face tokenizer --------------------------------------------------------------------------------------


def build_hf_tokenizer(vocab: Vocabulary) -> PreTrainedTokenizerFast:
    """The vocabulary as a `PreTrainedTokenizerFast`: a WordLevel model over whitespace-separated token strings, so
    `tokenizer.decode(ids)` is the space-separated tokens and `tokenizer(text)` gives the ids back.
    `model_max_length` is the sequence length. Strings outside the vocabulary raise (there is no <UNK>)."""
    word_level = Tokenizer(models.WordLevel({token: i for i, token in enumerate(vocab.tokens())}))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level, bos_token=START_FACE, eos_token=END_GENERATION, pad_token=PAD,
        additional_special_tokens=[START_GENERATION], model_max_length=vocab.length,
        clean_up_tokenization_spaces=False)


def vocabulary_from_tokenizer(tokenizer) -> Vocabulary:
    """The `Vocabulary` a tokenizer made by `build_hf_tokenizer` encodes (e.g. after `AutoTokenizer.from_pretrained`);
    a ValueError when its tokens do not follow facegen's layout."""
    ids = tokenizer.get_vocab()
    by_id = sorted(ids, key=ids.get)
    codebook_size = sum(1 for token in by_id if token.startswith("<c") and token[2:-1].isdigit())
    attributes = tuple(token[1:-3] for token in by_id if token.endswith("=0>"))
    n_image_tokens = tokenizer.model_max_length - len(attributes) - 3
    grid_size = math.isqrt(max(n_image_tokens, 0))
    try:
        vocab = Vocabulary(codebook_size, attributes, grid_size)
    except ValueError as error:
        raise ValueError(f"tokenizer is not a facegen vocabulary: {error}") from None
    if by_id != vocab.tokens() or grid_size * grid_size != n_image_tokens:
        raise ValueError(f"tokenizer is not a facegen vocabulary: expected {vocab.size} tokens "
                         f"<c0>..<c{codebook_size - 1}>, {', '.join(SPECIALS)}, then <Name=0/1/?> per attribute, "
                         f"and model_max_length = n_attributes + 3 + a square number of image tokens; got "
                         f"{len(by_id)} tokens and model_max_length {tokenizer.model_max_length}")
    return vocab
