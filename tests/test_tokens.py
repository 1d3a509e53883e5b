"""The vocabulary and sequence format: exact ids, round trips, every malformed case, attribute dropping, labels,
and the Hugging Face tokenizer (saved and reloaded offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing here touches the hub

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models  # noqa: E402
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from facegen.attributes import CELEBA_ATTRIBUTES, CONDITIONING_ATTRIBUTES  # noqa: E402
from facegen.tokens import (  # noqa: E402
    IGNORE_INDEX, Vocabulary, build_hf_tokenizer, vocabulary_from_tokenizer,
)

K = 512
VOCAB = Vocabulary(K)
N_ATTR = len(CONDITIONING_ATTRIBUTES)  # 18


def random_codes(seed: int = 0, batch: tuple[int, ...] = ()) -> torch.Tensor:
    return torch.randint(0, K, (*batch, 16, 16), generator=torch.Generator().manual_seed(seed))


def celeba_vector(positive: set[str]) -> np.ndarray:
    return np.array([1 if name in positive else -1 for name in CELEBA_ATTRIBUTES], dtype=np.int8)


# --- layout ------------------------------------------------------------------------------------------------------


def test_ids_and_positions_follow_the_documented_layout():
    assert (VOCAB.start_face_id, VOCAB.start_generation_id, VOCAB.end_generation_id, VOCAB.pad_id) == (512, 513, 514,
                                                                                                       515)
    assert VOCAB.size == 512 + 4 + 3 * 18 == 570
    assert VOCAB.length == 1 + 18 + 1 + 256 + 1 == 277
    assert (VOCAB.attribute_start, VOCAB.start_generation_position, VOCAB.image_start, VOCAB.end_position) == (
        1, 19, 20, 276)
    # Bald is the first conditioning attribute, Young the last: 516..518 and 516 + 3 * 17 = 567..569.
    assert [VOCAB.attribute_id("Bald", v) for v in (0, 1, None)] == [516, 517, 518]
    assert VOCAB.attribute_id("Bald", "?") == 518
    assert [VOCAB.attribute_id("Young", v) for v in (0, 1, "?")] == [567, 568, 569]
    assert VOCAB.code_id(0) == 0 and VOCAB.code_id(511) == 511


def test_token_strings_sit_at_their_ids():
    tokens = VOCAB.tokens()
    assert len(tokens) == VOCAB.size == len(set(tokens))
    assert tokens[:2] == ["<c0>", "<c1>"] and tokens[511] == "<c511>"
    assert tokens[512:516] == ["<START_FACE>", "<START_GENERATION>", "<END_GENERATION>", "<PAD>"]
    assert tokens[516:519] == ["<Bald=0>", "<Bald=1>", "<Bald=?>"]
    assert tokens[-1] == "<Young=?>"
    assert all(VOCAB.token(i) == token for i, token in enumerate(tokens))


def test_unknown_attribute_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown conditioning attribute 'Smiles'; valid names: Bald, Bangs, .*, "
                                         r"Young$"):
        VOCAB.attribute_id("Smiles", 1)
    with pytest.raises(ValueError, match=r"unknown conditioning attribute 'Attractive'"):  # CelebA, not conditioned
        VOCAB.encode_sequence({"Attractive": 1}, random_codes())


def test_bad_values_and_codes_are_refused():
    with pytest.raises(ValueError, match=r"attribute Smiling: value -1 is not one of 0, 1, None or '\?'"):
        VOCAB.attribute_id("Smiling", -1)
    with pytest.raises(ValueError, match=r"code index 512 is outside the codebook \[0, 511\]"):
        VOCAB.code_id(512)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 511\].*got \[0, 600\]"):
        VOCAB.encode_sequence(None, torch.cat([torch.zeros(255), torch.tensor([600])]).long())
    with pytest.raises(ValueError, match=r"codes must be integers shaped \(16, 16\) or \(256,\); got .*\(8, 8\)"):
        VOCAB.encode_sequence(None, torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"CelebA attribute vectors must hold only -1 and 1; got also \[0\]"):
        VOCAB.encode_sequence(np.zeros(40, dtype=np.int8), random_codes())
    with pytest.raises(ValueError, match=r"CelebA integer vectors \(40,\) of -1/1; got .*\(18,\)"):
        VOCAB.encode_sequence(np.ones(18, dtype=np.int8), random_codes())


# --- encoding ----------------------------------------------------------------------------------------------------


def test_a_hand_built_sequence_has_exactly_these_ids():
    codes = torch.arange(256).reshape(16, 16) % K
    ids = VOCAB.encode_sequence({"Smiling": 1, "Eyeglasses": 0}, codes)
    # Attribute j's "?" is 516 + 3j + 2; Eyeglasses is j=5 -> 531 (value 0), Smiling is j=13 -> 556 (value 1).
    expected_attributes = [516 + 3 * j + 2 for j in range(18)]
    expected_attributes[5], expected_attributes[13] = 531, 556
    expected = [512, *expected_attributes, 513, *range(256), 514]
    assert ids.dtype == torch.long and ids.tolist() == expected


def test_a_celeba_vector_sets_every_conditioning_attribute():
    positive = {"Male", "Smiling", "Attractive"}  # Attractive is not conditioned on: it must leave no trace
    ids = VOCAB.encode_sequence(celeba_vector(positive), random_codes())
    expected = [516 + 3 * j + (1 if name in positive else 0) for j, name in enumerate(CONDITIONING_ATTRIBUTES)]
    assert ids[1:19].tolist() == expected


def test_flat_and_grid_codes_give_the_same_sequence():
    codes = random_codes(1)
    assert torch.equal(VOCAB.encode_sequence(None, codes), VOCAB.encode_sequence(None, codes.flatten()))


def test_round_trip_through_decode():
    codes = random_codes(2)
    attributes = {"Bald": 1, "Young": 0, "Smiling": None, "Male": True}
    decoded, decoded_codes = VOCAB.decode_sequence(VOCAB.encode_sequence(attributes, codes))
    assert decoded == {name: {"Bald": 1, "Young": 0, "Male": 1}.get(name) for name in CONDITIONING_ATTRIBUTES}
    assert torch.equal(decoded_codes, codes)


def test_batches_match_single_sequences():
    codes = random_codes(3, (4,))
    vectors = np.stack([celeba_vector(s) for s in ({"Male"}, set(), {"Bald", "Young"}, set(CELEBA_ATTRIBUTES))])
    batch = VOCAB.encode_batch(torch.from_numpy(vectors), codes)
    assert batch.shape == (4, 277)
    for i in range(4):
        assert torch.equal(batch[i], VOCAB.encode_sequence(vectors[i], codes[i]))
    dicts = [{"Smiling": 1}, None, {}, {"Young": 0}]
    batch = VOCAB.encode_batch(dicts, codes.reshape(4, 256))
    for i in range(4):
        assert torch.equal(batch[i], VOCAB.encode_sequence(dicts[i], codes[i]))
    with pytest.raises(ValueError, match=r"3 attribute rows for 4 code grids"):
        VOCAB.encode_batch(torch.from_numpy(vectors[:3]), codes)


def test_prompt_is_the_prefix_of_the_sequence():
    attributes = {"Eyeglasses": 1}
    prompt = VOCAB.prompt_ids(attributes)
    assert len(prompt) == VOCAB.image_start == 20
    assert torch.equal(prompt, VOCAB.encode_sequence(attributes, random_codes())[:20])
    unconditional = VOCAB.prompt_ids()
    assert unconditional.tolist() == [512, *[516 + 3 * j + 2 for j in range(18)], 513]


# --- decoding errors ---------------------------------------------------------------------------------------------


@pytest.fixture
def sequence() -> torch.Tensor:
    return VOCAB.encode_sequence({"Smiling": 1}, random_codes(4))


def with_id(ids: torch.Tensor, position: int, token_id: int) -> torch.Tensor:
    ids = ids.clone()
    ids[position] = token_id
    return ids


def test_wrong_length(sequence):
    with pytest.raises(ValueError, match=r"a sequence must be 277 integer ids .* got torch.int64 \(276,\)"):
        VOCAB.decode_sequence(sequence[:-1])


def test_wrong_specials(sequence):
    with pytest.raises(ValueError, match=r"^malformed sequence: position 0 holds <PAD>; expected <START_FACE>$"):
        VOCAB.decode_sequence(with_id(sequence, 0, VOCAB.pad_id))
    with pytest.raises(ValueError, match=r"position 19 holds <c3>; expected <START_GENERATION>$"):
        VOCAB.decode_sequence(with_id(sequence, 19, 3))
    with pytest.raises(ValueError, match=r"position 276 holds <START_FACE>; expected <END_GENERATION>$"):
        VOCAB.decode_sequence(with_id(sequence, 276, VOCAB.start_face_id))


def test_image_slot_holding_a_non_image_token(sequence):
    broken = with_id(with_id(sequence, 25, VOCAB.end_generation_id), 200, VOCAB.attribute_id("Bald", 1))
    with pytest.raises(ValueError, match=r"position 25 holds <END_GENERATION>; expected an image token <c0> \.\. "
                                         r"<c511> \(2 image positions hold other tokens\)"):
        VOCAB.decode_sequence(broken)
    with pytest.raises(ValueError, match=r"position 30 holds id 9999 \(outside the vocabulary of 570\)"):
        VOCAB.decode_sequence(with_id(sequence, 30, 9999))


def test_attribute_slot_holding_another_attributes_token(sequence):
    # Position 1 is Bald's slot; <Bangs=1> belongs to position 2.
    with pytest.raises(ValueError, match=r"position 1 holds <Bangs=1>; expected one of <Bald=0>, <Bald=1>, "
                                         r"<Bald=\?>$"):
        VOCAB.decode_sequence(with_id(sequence, 1, VOCAB.attribute_id("Bangs", 1)))
    with pytest.raises(ValueError, match=r"position 18 holds <c7>; expected one of <Young=0>"):
        VOCAB.decode_sequence(with_id(sequence, 18, 7))


# --- training helpers --------------------------------------------------------------------------------------------


def training_batch(n: int = 2000) -> torch.Tensor:
    vectors = torch.where(torch.rand(n, 40, generator=torch.Generator().manual_seed(5)) < 0.5, 1, -1).to(torch.int8)
    return VOCAB.encode_batch(vectors, random_codes(6, (n,)))


def is_unspecified(ids: torch.Tensor) -> torch.Tensor:
    """(B, 18) bool: which attribute slots hold their `?` token."""
    unspecified = torch.tensor([VOCAB.attribute_id(name, None) for name in CONDITIONING_ATTRIBUTES])
    return ids[:, 1:19] == unspecified


def test_dropping_all_makes_every_attribute_unspecified_and_nothing_else():
    ids = training_batch(50)
    dropped = VOCAB.drop_attributes(ids, p_all=1.0, p_one=0.0, generator=torch.Generator().manual_seed(0))
    assert is_unspecified(dropped).all()
    assert torch.equal(dropped[:, 19:], ids[:, 19:]) and torch.equal(dropped[:, 0], ids[:, 0])
    assert not is_unspecified(ids).any()  # the input is left untouched


def test_dropping_single_attributes_hits_about_the_requested_share():
    ids = training_batch()
    dropped = VOCAB.drop_attributes(ids, p_all=0.0, p_one=0.5, generator=torch.Generator().manual_seed(1))
    share = is_unspecified(dropped).float().mean().item()
    assert abs(share - 0.5) < 0.02  # 36,000 draws: the standard deviation of the share is 0.0026
    kept = ~is_unspecified(dropped)
    assert torch.equal(dropped[:, 1:19][kept], ids[:, 1:19][kept])  # untouched slots keep their value
    assert torch.equal(dropped[:, 19:], ids[:, 19:])  # image tokens and specials never change
    for i in range(0, 2000, 400):
        VOCAB.decode_sequence(dropped[i])  # still well-formed


def test_drop_all_probability_is_per_sequence():
    dropped = VOCAB.drop_attributes(training_batch(), p_all=0.2, p_one=0.0, generator=torch.Generator().manual_seed(2))
    per_sequence = is_unspecified(dropped)
    assert torch.equal(per_sequence.all(dim=1), per_sequence.any(dim=1))  # all or nothing
    assert abs(per_sequence.all(dim=1).float().mean().item() - 0.2) < 0.03


def test_dropping_is_reproducible_with_a_generator_and_checks_its_input():
    ids = training_batch(100)
    first = VOCAB.drop_attributes(ids, 0.1, 0.3, generator=torch.Generator().manual_seed(7))
    again = VOCAB.drop_attributes(ids, 0.1, 0.3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match=r"p_one must be a probability in \[0, 1\], got 1.5"):
        VOCAB.drop_attributes(ids, 0.1, 1.5)
    with pytest.raises(ValueError, match=r"expected a batch of sequences \(B, 277\), got \(277,\)"):
        VOCAB.drop_attributes(ids[0], 0.1, 0.1)


def test_labels_count_only_the_image_tokens_and_end():
    mask = VOCAB.loss_mask()
    assert mask.shape == (277,) and mask.sum() == 257
    assert not mask[:20].any() and mask[20:].all()
    ids = training_batch(3)
    labels = VOCAB.labels(ids)
    assert (labels[:, :20] == IGNORE_INDEX).all()
    assert torch.equal(labels[:, 20:], ids[:, 20:])
    assert labels[0, -1] == VOCAB.end_generation_id
    assert torch.equal(VOCAB.loss_mask(25), mask[:25])  # truncated sequences (e.g. a prompt plus 5 tokens)
    with pytest.raises(ValueError, match=r"loss_mask: length must be in \[0, 277\], got 300"):
        VOCAB.loss_mask(300)


# --- the Hugging Face tokenizer ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer():
    return build_hf_tokenizer(VOCAB)


def test_tokenizer_text_and_ids_match_encode_sequence(hf_tokenizer):
    ids = VOCAB.encode_sequence({"Smiling": 1, "Male": 0}, random_codes(8))
    text = hf_tokenizer.decode(ids.tolist())
    tokens = text.split(" ")
    assert len(tokens) == 277
    assert tokens[:2] == ["<START_FACE>", "<Bald=?>"] and tokens[14] == "<Smiling=1>" and tokens[8] == "<Male=0>"
    assert tokens[19] == "<START_GENERATION>" and tokens[-1] == "<END_GENERATION>"
    assert tokens[20] == f"<c{int(ids[20])}>"
    assert hf_tokenizer(text)["input_ids"] == ids.tolist()


def test_tokenizer_special_tokens(hf_tokenizer):
    assert len(hf_tokenizer) == VOCAB.size
    assert hf_tokenizer.bos_token_id == VOCAB.start_face_id
    assert hf_tokenizer.eos_token_id == VOCAB.end_generation_id
    assert hf_tokenizer.pad_token_id == VOCAB.pad_id
    assert hf_tokenizer.convert_tokens_to_ids("<START_GENERATION>") == VOCAB.start_generation_id
    assert hf_tokenizer.model_max_length == 277


def test_tokenizer_saves_and_loads_with_auto_tokenizer(hf_tokenizer, tmp_path):
    hf_tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    ids = VOCAB.encode_batch([{"Bald": 1}, None], random_codes(9, (2,)))
    texts = [loaded.decode(row.tolist()) for row in ids]
    assert texts == [hf_tokenizer.decode(row.tolist()) for row in ids]
    assert loaded(texts)["input_ids"] == ids.tolist()
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (512, 514, 515)
    assert vocabulary_from_tokenizer(loaded) == VOCAB


def test_vocabulary_from_tokenizer_recovers_other_sizes():
    small = Vocabulary(16, ("Eyeglasses", "Smiling"), grid_size=4)
    recovered = vocabulary_from_tokenizer(build_hf_tokenizer(small))
    assert recovered == small and recovered.length == 1 + 2 + 1 + 16 + 1


def test_vocabulary_from_a_foreign_tokenizer_is_refused():
    not_square = build_hf_tokenizer(VOCAB)
    not_square.model_max_length = 300  # 300 - 21 = 279 image tokens: not a square grid
    with pytest.raises(ValueError, match=r"tokenizer is not a facegen vocabulary: expected 570 tokens .*"
                                         r"got 570 tokens and model_max_length 300"):
        vocabulary_from_tokenizer(not_square)
    word_level = Tokenizer(models.WordLevel({"hello": 0, "<c0>": 1, "<Smiling=0>": 2}))
    foreign = PreTrainedTokenizerFast(tokenizer_object=word_level, model_max_length=5)
    with pytest.raises(ValueError, match=r"tokenizer is not a facegen vocabulary: expected 8 tokens .* got 3 tokens"):
        vocabulary_from_tokenizer(foreign)


def test_vocabulary_checks_its_arguments():
    with pytest.raises(ValueError, match=r"codebook_size must be a positive integer, got 0"):
        Vocabulary(0)
    with pytest.raises(ValueError, match=r"attributes must be distinct CelebA attribute names; got unknown "
                                         r"\['Hat'\]"):
        Vocabulary(8, ("Hat",))
