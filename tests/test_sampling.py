"""Sampling: the grammar, guidance against a hand computation, seeds, greedy, warpers and completion.

Most tests use a tiny vocabulary (8 codes, 2 attributes, a 4x4 grid: sequences of 21 tokens) and a one-layer GPT-2,
so a thousand samples take well under a second; one test checks the real 16x16 format."""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from facegen.sampling import (ImageGrammar, generation_inputs, parse_attributes, prompt_batch, sample_codes,
                              sample_faces, sample_sequences)
from facegen.tokens import Vocabulary

VOCAB = Vocabulary(8, attributes=("Eyeglasses", "Smiling"), grid_size=4)


def tiny_gpt(vocab: Vocabulary = VOCAB, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab.size, n_positions=vocab.length, n_layer=1, n_embd=16, n_head=2,
                        bos_token_id=vocab.start_face_id, eos_token_id=vocab.end_generation_id,
                        pad_token_id=vocab.pad_id)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_gpt()


def misbehaving_gpt(vocab: Vocabulary = VOCAB) -> GPT2LMHeadModel:
    """A GPT that strongly prefers every token that is NOT an image code (+3 on their logits): without the grammar
    its samples almost never decode, so a grammar that leaks shows."""
    gpt = tiny_gpt(vocab, seed=1)
    bias = torch.zeros(vocab.size)
    bias[vocab.codebook_size:] = 3.0
    gpt.lm_head.register_forward_hook(lambda module, inputs, output: output + bias)
    return gpt


def decodes(vocab: Vocabulary, sequence: torch.Tensor) -> bool:
    try:
        vocab.decode_sequence(sequence)
    except ValueError:
        return False
    return True


def full_logits(model, sequences: torch.Tensor) -> torch.Tensor:
    """Logits of every position from one forward pass of whole sequences (no cache): the reference."""
    with torch.no_grad():
        return model(sequences).logits


def masked_log_probs(vocab: Vocabulary, logits: torch.Tensor, position: int) -> torch.Tensor:
    allowed = ImageGrammar(vocab).allowed(position, logits.shape[-1])
    return F.log_softmax(logits, dim=-1).masked_fill(~allowed, -math.inf)


# ------------------------------------------------------------------------------------------------------- grammar


def test_grammar_allows_codes_then_only_end():
    grammar = ImageGrammar(VOCAB)
    for position in range(VOCAB.image_start, VOCAB.end_position):
        assert grammar.allowed(position, VOCAB.size).nonzero().flatten().tolist() == list(range(8))
    assert grammar.allowed(VOCAB.end_position, VOCAB.size).nonzero().flatten().tolist() == [VOCAB.end_generation_id]
    scores = torch.zeros(3, VOCAB.size)
    out = grammar(torch.zeros(3, VOCAB.end_position, dtype=torch.long), scores)
    assert torch.isinf(out).sum() == 3 * (VOCAB.size - 1) and (out[:, VOCAB.end_generation_id] == 0).all()
    with pytest.raises(ValueError, match="outside the generated part"):
        grammar.allowed(VOCAB.image_start - 1, VOCAB.size)


def test_grammar_holds_over_1000_samples_with_random_settings():
    gpt, rng = misbehaving_gpt(), random.Random(0)
    faces = torch.randint(0, VOCAB.codebook_size, (1, 4, 4), generator=torch.Generator().manual_seed(0))
    total = 0
    for batch in range(10):
        keep = rng.choice([0, 0, rng.randint(1, VOCAB.n_image_tokens)])
        attributes = rng.choice([None, {"Smiling": 1}, {"Eyeglasses": 0, "Smiling": "?"}])
        settings = dict(guidance_scale=rng.choice([1.0, 0.0, rng.uniform(0.5, 5)]),
                        temperature=rng.choice([0.0, rng.uniform(0.3, 3)]), top_k=rng.choice([None, rng.randint(1, 20)]),
                        top_p=rng.choice([None, rng.uniform(0.05, 1)]), use_cache=rng.random() < 0.8, seed=batch)
        sequences = sample_sequences(gpt, VOCAB, 100, attributes, prefix_codes=faces if keep else None,
                                     keep_tokens=keep, **settings)
        for sequence in sequences:
            asked, codes = VOCAB.decode_sequence(sequence)  # raises if the grammar leaked
            assert asked == {"Eyeglasses": None, "Smiling": None, **{k: None if v == "?" else v
                                                                      for k, v in (attributes or {}).items()}}
            assert torch.equal(codes.flatten()[:keep], faces.flatten()[:keep])
        total += len(sequences)
    assert total == 1000
    unconstrained = sample_sequences(gpt, VOCAB, 100, constrained=False, seed=0)
    assert sum(decodes(VOCAB, s) for s in unconstrained) < 5  # the test model really needs the grammar


def test_the_real_sequence_format():
    vocab = Vocabulary(512)
    gpt = tiny_gpt(vocab)
    sequences = sample_sequences(gpt, vocab, 2, {"Smiling": 1, "Eyeglasses": 0}, guidance_scale=2.0, seed=0)
    assert sequences.shape == (2, 277)
    for sequence in sequences:
        attributes, _ = vocab.decode_sequence(sequence)
        assert attributes["Smiling"] == 1 and attributes["Eyeglasses"] == 0 and attributes["Bald"] is None
    codes = sample_codes(gpt, vocab, 1, temperature=0)
    assert codes.shape == (1, 16, 16) and codes.dtype == torch.long


# ---------------------------------------------------------------------------------------------------- guidance


@pytest.mark.parametrize("scale", [0.0, 2.5])
def test_guided_scores_are_u_plus_s_times_c_minus_u(model, scale):
    attributes = {"Smiling": 1, "Eyeglasses": 0}
    inputs = generation_inputs(model, VOCAB, 3, attributes, guidance_scale=scale, temperature=0)
    inputs["generation_config"].update(output_scores=True, return_dict_in_generate=True)
    out = model.generate(**inputs)
    generated = out.sequences[:, VOCAB.image_start:]
    conditional = full_logits(model, out.sequences)
    unconditional = full_logits(model, torch.cat([prompt_batch(VOCAB, 3), generated], dim=1))
    for step, scores in enumerate(out.scores):
        position = VOCAB.image_start + step  # the logits at position - 1 predict the token at `position`
        c = F.log_softmax(conditional[:, position - 1], dim=-1)
        u = F.log_softmax(unconditional[:, position - 1], dim=-1)
        expected = (u + scale * (c - u)).masked_fill(~ImageGrammar(VOCAB).allowed(position, VOCAB.size), -math.inf)
        torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
        assert torch.equal(generated[:, step], expected.argmax(dim=-1))


def test_guidance_of_an_unconditional_prompt_changes_nothing(model):
    plain = sample_codes(model, VOCAB, 8, None, seed=3)
    assert torch.equal(sample_codes(model, VOCAB, 8, None, guidance_scale=3.0, seed=3), plain)  # c == u


# --------------------------------------------------------------------------------------- seeds, greedy, warpers


def test_same_seed_same_batch_and_the_callers_rng_is_untouched(model):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = sample_codes(model, VOCAB, 6, {"Smiling": 1}, seed=7, top_p=0.9)
    assert torch.equal(torch.rand(1), expected_next)
    torch.rand(50)  # whatever ran before does not matter
    assert torch.equal(sample_codes(model, VOCAB, 6, {"Smiling": 1}, seed=7, top_p=0.9), first)
    assert not torch.equal(sample_codes(model, VOCAB, 6, {"Smiling": 1}, seed=8, top_p=0.9), first)


def test_greedy_is_the_argmax_path(model):
    sequences = prompt_batch(VOCAB, 4, [{"Smiling": 1}, {"Smiling": 0}, None, {"Eyeglasses": 1}])
    while sequences.shape[1] < VOCAB.end_position:  # by hand: whole-sequence forward passes, no cache
        logits = full_logits(model, sequences)[:, -1]
        choice = masked_log_probs(VOCAB, logits, sequences.shape[1]).argmax(dim=-1, keepdim=True)
        sequences = torch.cat([sequences, choice], dim=1)
    expected = sequences[:, VOCAB.image_start:].reshape(4, 4, 4)
    asked = [{"Smiling": 1}, {"Smiling": 0}, None, {"Eyeglasses": 1}]
    for use_cache in (True, False):
        assert torch.equal(sample_codes(model, VOCAB, 4, asked, temperature=0, use_cache=use_cache), expected)


def test_top_k_1_equals_greedy(model):
    greedy = sample_codes(model, VOCAB, 8, {"Smiling": 1}, temperature=0)
    for seed in (0, 1):
        assert torch.equal(sample_codes(model, VOCAB, 8, {"Smiling": 1}, top_k=1, seed=seed), greedy)


@pytest.mark.parametrize("setting", [{"top_k": 3}, {"top_p": 0.4}, {"top_p": 0.4, "temperature": 0.5}])
def test_every_sampled_code_is_inside_the_top_k_or_top_p_set(setting):
    gpt = tiny_gpt(seed=2)
    gpt.lm_head.register_forward_hook(lambda module, inputs, output: 3 * output)  # sharper: small top-p sets
    sequences = sample_sequences(gpt, VOCAB, 64, seed=0, **setting)
    logits = full_logits(gpt, sequences)
    inside, ranks = [], []
    for position in range(VOCAB.image_start, VOCAB.end_position):
        log_probs = masked_log_probs(VOCAB, logits[:, position - 1] / setting.get("temperature", 1.0), position)
        order = log_probs.argsort(dim=-1, descending=True)
        rank = (order == sequences[:, position:position + 1]).nonzero()[:, 1]  # 0 = the most likely code
        ranks.append(rank)
        if "top_k" in setting:
            inside.append(rank < setting["top_k"])
        else:  # allowed: the most likely codes until their probability reaches p (the one that crosses it included)
            mass_before = log_probs.exp().gather(1, order).cumsum(dim=1) - log_probs.exp().gather(1, order)
            inside.append(mass_before.gather(1, rank[:, None]).squeeze(1) < setting["top_p"] + 1e-6)
    assert torch.stack(inside).all()
    assert (torch.stack(ranks) > 0).float().mean() > 0.1  # it did sample, not just pick the most likely code


def test_temperature_divides_the_grammar_masked_logits(model):
    inputs = generation_inputs(model, VOCAB, 4, {"Smiling": 1}, temperature=0.5)
    inputs["generation_config"].update(output_scores=True, return_dict_in_generate=True)
    out = model.generate(**inputs)
    logits = full_logits(model, out.sequences)
    for step, scores in enumerate(out.scores):
        position = VOCAB.image_start + step
        allowed = ImageGrammar(VOCAB).allowed(position, VOCAB.size)
        expected = (logits[:, position - 1] / 0.5).masked_fill(~allowed, -math.inf)
        torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------- completion


def test_completion_keeps_the_first_tokens_exactly(model):
    faces = torch.randint(0, 8, (3, 4, 4), generator=torch.Generator().manual_seed(1))
    for keep in (1, 7, 16):
        codes = sample_codes(model, VOCAB, 3, {"Smiling": 1}, prefix_codes=faces, keep_tokens=keep, seed=0,
                             guidance_scale=2.0)
        assert torch.equal(codes.reshape(3, -1)[:, :keep], faces.reshape(3, -1)[:, :keep])
    assert torch.equal(sample_codes(model, VOCAB, 3, prefix_codes=faces, keep_tokens=16), faces)
    one = sample_codes(model, VOCAB, 5, prefix_codes=faces[:1], keep_tokens=8, seed=0)  # one face for all
    assert (one.reshape(5, -1)[:, :8] == faces[0].flatten()[:8]).all()
    rest = one.reshape(5, -1)[:, 8:]
    assert len({tuple(row.tolist()) for row in rest}) > 1  # each sample finishes it its own way


def test_completion_with_no_kept_token_is_plain_sampling(model):
    faces = torch.zeros(2, 4, 4, dtype=torch.long)
    assert torch.equal(sample_codes(model, VOCAB, 2, prefix_codes=faces, keep_tokens=0, seed=4),
                       sample_codes(model, VOCAB, 2, seed=4))


# ------------------------------------------------------------------------------------------------------ prompts


def test_prompts_from_one_dict_or_one_per_sample():
    one = prompt_batch(VOCAB, 2, {"Smiling": 1})
    expected = [VOCAB.start_face_id, VOCAB.attribute_id("Eyeglasses", "?"), VOCAB.attribute_id("Smiling", 1),
                VOCAB.start_generation_id]
    assert one.tolist() == [expected, expected]
    each = prompt_batch(VOCAB, 2, [{"Smiling": 0}, None], prefix_codes=torch.arange(16).reshape(4, 4) % 8,
                        keep_tokens=3)
    assert each[0, 2] == VOCAB.attribute_id("Smiling", 0) and each[1, 2] == VOCAB.attribute_id("Smiling", "?")
    assert each[:, 4:].tolist() == [[0, 1, 2], [0, 1, 2]]


def test_sample_faces_decodes_the_sampled_codes(model):
    from facegen.vqvae import VQVAE

    torch.manual_seed(0)
    vqvae = VQVAE(codebook_size=8, embed_dim=4, hidden=8, n_res_blocks=1).eval()
    images = sample_faces(model, VOCAB, vqvae, 3, {"Smiling": 1}, seed=5, guidance_scale=2.0)
    codes = sample_codes(model, VOCAB, 3, {"Smiling": 1}, seed=5, guidance_scale=2.0)
    assert images.shape == (3, 3, 32, 32)
    torch.testing.assert_close(images, vqvae.decode_indices(codes))


# -------------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, message", [
    ({"attributes": {"Smiling": 1, "Glasses": 0}}, "unknown conditioning attribute 'Glasses'; valid names: "
                                                   "Eyeglasses, Smiling"),
    ({"attributes": {"Smiling": 2}}, r"attribute Smiling: value 2 is not one of 0, 1, None or '\?'"),
    ({"attributes": [{"Smiling": 1}]}, "1 dicts for n=2 samples"),
    ({"attributes": "Smiling"}, "attributes must be None, a dict"),
    ({"n": 0}, "n must be a positive integer"),
    ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
    ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
    ({"guidance_scale": -2}, "guidance_scale must be a finite number >= 0"),
    ({"top_k": 0}, "top_k must be None"),
    ({"top_p": 0.0}, r"top_p must be None \(off\) or a number in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be None"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"keep_tokens": 4}, "keep_tokens=4 needs prefix_codes"),
    ({"keep_tokens": 17, "prefix_codes": torch.zeros(2, 4, 4, dtype=torch.long)}, r"keep_tokens must be an integer "
                                                                                  r"in \[0, 16\]"),
    ({"keep_tokens": 2, "prefix_codes": torch.zeros(3, 4, 4, dtype=torch.long)}, r"prefix_codes must be integer "
                                                                                 r"codes shaped \(n or 1, 4, 4\)"),
    ({"keep_tokens": 2, "prefix_codes": torch.zeros(2, 4, 4)}, "prefix_codes must be integer codes"),
    ({"keep_tokens": 2, "prefix_codes": torch.full((2, 4, 4), 8)}, r"prefix_codes must lie in \[0, 7\]"),
])
def test_bad_arguments_raise_one_clear_error(model, kwargs, message):
    kwargs = {"n": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample_codes(model, VOCAB, **kwargs)


def test_a_model_of_another_vocabulary_is_refused(model):
    with pytest.raises(ValueError, match="vocab_size 18 does not match the vocabulary's 570 tokens"):
        sample_codes(model, Vocabulary(512), 1)


def test_parse_attributes_from_the_command_line():
    assert parse_attributes(["Smiling=1", "Eyeglasses=0", "Bald=?"]) == {"Smiling": 1, "Eyeglasses": 0, "Bald": "?"}
    assert parse_attributes([]) == {}
    for bad, message in (("Smiling", "expected NAME=VALUE"), ("Smiling=yes", "expected NAME=VALUE"),
                         ("Glasses=1", "unknown conditioning attribute 'Glasses'; valid names: Bald, Bangs")):
        with pytest.raises(ValueError, match=message):
            parse_attributes([bad])
    with pytest.raises(ValueError, match="Smiling is set twice"):
        parse_attributes(["Smiling=1", "Smiling=0"])


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_a_static_cache_gives_the_same_faces_as_the_dynamic_one(model, guidance):
    """The static KV cache (what lets transformers compile the decoding step on a GPU) changes how the keys and values
    are stored, not what is computed: the same seed gives the same codes, with and without guidance."""
    kwargs = dict(attributes={"Smiling": 1}, guidance_scale=guidance, seed=3)
    dynamic = sample_codes(model, VOCAB, 3, **kwargs)
    static = sample_codes(model, VOCAB, 3, cache="static", **kwargs)
    assert torch.equal(static, dynamic)
    assert generation_inputs(model, VOCAB, 1, cache="static")["generation_config"].cache_implementation == "static"
    assert generation_inputs(model, VOCAB, 1)["generation_config"].cache_implementation is None
    with pytest.raises(ValueError, match="cache must be one of dynamic, static, got 'paged'"):
        sample_codes(model, VOCAB, 1, cache="paged")
