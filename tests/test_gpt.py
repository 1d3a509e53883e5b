"""facegen.gpt: the GPT-2 config per profile, the loss on image tokens only, accumulation, exact resume, save/load."""

import json
import math

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from facegen import gpt
from facegen.train.engine import SettingsChanged
from facegen.config import get_profile
from facegen.tokenize_dataset import FINGERPRINT_FILE, TokenInfo, split_table, tokens_folder
from facegen.tokens import Vocabulary

VOCAB = Vocabulary(codebook_size=16, grid_size=4)  # sequences of 1 + 18 + 1 + 16 + 1 = 37 tokens
TINY = get_profile("ci").replace(gpt={"n_layer": 2, "n_embd": 32, "n_head": 4, "dropout": 0.1, "batch_size": 4,
                                      "grad_accum": 2, "steps": 6, "val_every": 3, "warmup_steps": 2, "lr": 3e-3})


def tiny_splits(n_train: int = 24, n_valid: int = 6, seed: int = 0, codebook: int = 16, grid: int = 4,
                learnable: bool = False) -> datasets.DatasetDict:
    """Tokenized splits in the real on-disk format (`split_table`). `learnable`: every code of an image is its
    Smiling bit plus 2 x its Male bit, so a model that reads the attributes can predict the image."""
    rng = np.random.default_rng(seed)

    def split(n):
        attributes = np.where(rng.random((n, 40)) < 0.4, 1, -1)
        if learnable:
            value = (attributes[:, 31] == 1) + 2 * (attributes[:, 20] == 1)
            codes = np.repeat(value[:, None], grid * grid, axis=1)
        else:
            codes = rng.integers(0, codebook, (n, grid * grid))
        return split_table(torch.from_numpy(codes.astype(np.int16)), attributes)

    return datasets.DatasetDict(train=split(n_train), valid=split(n_valid))


def tiny_model(seed: int = 0, dropout: float = 0.0):
    torch.manual_seed(seed)
    return gpt.build_gpt(TINY.replace(gpt={"dropout": dropout}), VOCAB)


def random_sequences(n: int, seed: int = 0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    return VOCAB.encode_batch(np.where(g.random((n, 40)) < 0.5, 1, -1), g.integers(0, 16, (n, 16)))


# --- model size ---------------------------------------------------------------------------------------------------


def test_gpt_config_follows_the_profile_and_the_vocabulary():
    config = gpt.gpt_config(TINY, VOCAB)
    assert (config.vocab_size, config.n_positions) == (16 + 4 + 3 * 18, 37)
    assert (config.n_layer, config.n_embd, config.n_head) == (2, 32, 4)
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.1
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (16, 18, 19)


def test_the_mlp_activation_is_gpt2s_tanh_gelu():
    from transformers.activations import ACT2FN

    model = gpt.build_gpt(TINY, VOCAB)
    act = model.transformer.h[0].mlp.act
    x = torch.linspace(-6, 6, 1001)
    assert torch.allclose(act(x), ACT2FN["gelu_new"](x), atol=1e-6)  # GPT-2's own activation, fused
    assert torch.allclose(act(x), F.gelu(x, approximate="tanh"), atol=1e-6)
    assert not torch.allclose(act(x), F.gelu(x), atol=1e-4)  # the tanh approximation, not the exact erf GELU


def test_the_gpu_profile_is_gpt2_small_with_86m_parameters():
    vocab = Vocabulary.for_profile(get_profile("gpu"))
    config = gpt.gpt_config(get_profile("gpu"), vocab)
    counts = gpt.count_parameters(config)
    d, per_layer = 768, 12 * 768 ** 2 + 13 * 768  # attention 4d^2+4d, MLP 8d^2+5d, two LayerNorms 4d
    assert (vocab.size, vocab.length) == (570, 277)
    assert counts["non_embedding"] == 12 * per_layer + 2 * d  # + the final LayerNorm
    assert counts["embedding"] == 570 * d + 277 * d
    assert counts["total"] == 85_706_496  # the output layer shares the token embedding


def test_parameter_count_of_a_built_model_matches_the_meta_count():
    model = tiny_model()
    assert sum(p.numel() for p in model.parameters()) == gpt.count_parameters(model.config)["total"]
    assert model.lm_head.weight is model.transformer.wte.weight


def test_grid_position_embeddings_by_hand():
    # n_embd 8: two frequencies per axis, 1 and exp(-ln 100 * 2/4) = 0.1; each half is [sin(x f), cos(x f)]
    table = gpt.grid_position_embeddings(8, grid=4, amplitude=0.5)
    assert table.shape == (16, 8)
    row, col = 2, 3
    expected = 0.5 * torch.tensor([math.sin(2), math.sin(0.2), math.cos(2), math.cos(0.2),
                                   math.sin(3), math.sin(0.3), math.cos(3), math.cos(0.3)])
    assert torch.allclose(table[row * 4 + col], expected, atol=1e-6)
    grid = table.reshape(4, 4, 8)
    assert torch.equal(grid[:, :, :4], grid[:, :1, :4].expand(4, 4, 4))  # the first half depends on the row only
    assert torch.equal(grid[:, :, 4:], grid[:1, :, 4:].expand(4, 4, 4))  # the second half on the column only
    assert len({tuple(v.tolist()) for v in table}) == 16  # every cell its own code
    with pytest.raises(ValueError, match="divisible by 4"):
        gpt.grid_position_embeddings(30, grid=4, amplitude=0.02)


def test_build_gpt_starts_image_positions_on_the_grid_and_leaves_the_prompt_positions_random():
    model = tiny_model()
    wpe = model.transformer.wpe.weight.detach()
    image = slice(VOCAB.image_start, VOCAB.image_start + VOCAB.n_image_tokens)
    assert torch.equal(wpe[image], gpt.grid_position_embeddings(32, 4, model.config.initializer_range))
    prompt = wpe[:VOCAB.image_start]
    assert 0.01 < prompt.std().item() < 0.03  # GPT-2's normal(0, 0.02) init, untouched
    torch.manual_seed(0)
    plain = gpt.build_gpt(TINY.replace(gpt={"dropout": 0.1, "grid_positions": False}), VOCAB)
    assert torch.equal(plain.transformer.wpe.weight[:VOCAB.image_start], prompt)  # same seed, same noise there
    assert not torch.allclose(plain.transformer.wpe.weight[image], wpe[image])
    with torch.device("meta"):  # how the gpu model is sized on a CPU: no allocation, and no error
        assert gpt.build_gpt(get_profile("gpu"), Vocabulary.for_profile(get_profile("gpu"))).device.type == "meta"


def test_training_flops_per_token_by_hand_for_the_cpu_profile():
    profile = get_profile("cpu")
    config = gpt.gpt_config(profile, Vocabulary.for_profile(profile))
    non_embedding = 4 * (12 * 128 ** 2 + 13 * 128) + 2 * 128  # 4 blocks of 128 wide, then the final LayerNorm
    expected = 6 * (non_embedding + 570 * 128) + 12 * 4 * 277 * 128
    assert gpt.training_flops_per_token(config) == expected == 6_899_712


def test_weight_decay_only_on_matrices():
    model = tiny_model()
    optimizer = gpt.make_optimizer(model, lr=1e-3, weight_decay=0.1)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {n for n, p in model.named_parameters() if p.ndim == 2}
    assert all(n.endswith(".bias") or ".ln_" in n for n in (names[id(p)] for p in no_decay["params"]))
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert optimizer.defaults["fused"]  # torch has the fused AdamW kernel for CPU too


# --- data ---------------------------------------------------------------------------------------------------------


def test_encode_split_builds_the_sequences_of_every_row():
    splits = tiny_splits()
    ids = gpt.encode_split(splits["train"], VOCAB)
    row = splits["train"][5]
    assert ids.dtype == torch.int32 and ids.shape == (24, 37)
    assert torch.equal(ids[5].long(), VOCAB.encode_sequence(row["attributes"], torch.tensor(row["codes"])))
    assert torch.equal(gpt.encode_split(splits["train"], VOCAB, chunk=5), ids)  # chunking changes nothing


def test_encode_split_names_a_wrong_grid():
    with pytest.raises(ValueError, match=r"valid: codes hold 16 tokens .* expects 256 \(16x16\)"):
        gpt.encode_split(tiny_splits()["valid"], Vocabulary(16), "valid")


def test_total_steps_from_epochs():
    cfg = TINY.gpt
    assert gpt.total_steps(cfg, 1000) == 6  # steps set: used as given
    by_epochs = TINY.replace(gpt={"steps": None, "epochs": 5, "batch_size": 40, "grad_accum": 2}).gpt
    assert gpt.total_steps(by_epochs, 162_770) == 5 * math.ceil(162_770 / 80) == 10_175
    assert gpt.total_steps(by_epochs, 162_770, processes=4) == 5 * math.ceil(162_770 / 320)


def test_training_batches_are_a_pure_function_of_seed_and_step():
    ids = gpt.encode_split(tiny_splits()["train"], VOCAB)
    cfg = TINY.replace(gpt={"p_drop_all": 0.0, "p_drop_one": 0.5}).gpt
    first = gpt.training_batch(ids, 3, 1, cfg, VOCAB)
    assert first.dtype == torch.long and first.shape == (4, 37)
    assert torch.equal(gpt.training_batch(ids, 3, 1, cfg, VOCAB), first)  # recomputable after a restart
    assert not torch.equal(gpt.training_batch(ids, 3, 0, cfg, VOCAB), first)
    # the rows are those of batch_indices at the global micro-batch counter; only attributes may differ from them
    from facegen.train.schedule import batch_indices

    original = ids[batch_indices(3 * 2 + 1, 24, 4, cfg.seed)].long()
    attributes = slice(1, 19)
    changed = first != original
    assert not changed[:, :attributes.start].any() and not changed[:, attributes.stop:].any()
    assert changed.any()
    unspecified = VOCAB.first_attribute_id + 3 * torch.arange(18) + 2
    assert torch.equal(first[:, attributes][changed[:, attributes]],
                       unspecified.expand(4, 18)[changed[:, attributes]])
    # processes of a multi-GPU run take different rows
    assert not torch.equal(gpt.training_batch(ids, 3, 1, cfg, VOCAB, rank=1, processes=2),
                           gpt.training_batch(ids, 3, 1, cfg, VOCAB, rank=0, processes=2))


# --- loss ---------------------------------------------------------------------------------------------------------


def test_loss_is_the_cross_entropy_of_the_image_tokens_and_end():
    model, ids = tiny_model().eval(), random_sequences(3)
    with torch.no_grad():
        logits = model(ids).logits
        loss = gpt.gpt_loss(model, ids, VOCAB)
    # the logits at t-1 predict the token at t: START_GENERATION predicts the first image token, the last image token
    # predicts END; 16 + 1 predictions per sequence here (256 + 1 with the real grid)
    predicting = logits[:, VOCAB.image_start - 1:VOCAB.end_position]
    targets = ids[:, VOCAB.image_start:VOCAB.end_position + 1]
    assert predicting.shape[1] == VOCAB.n_image_tokens + 1
    assert float(loss) == pytest.approx(float(F.cross_entropy(predicting.reshape(-1, VOCAB.size),
                                                              targets.reshape(-1))), rel=1e-6)


def test_attribute_labels_do_not_count_but_attribute_inputs_do():
    model, ids = tiny_model().eval(), random_sequences(2)
    other = VOCAB.drop_attributes(ids, p_all=1.0, p_one=0.0)  # every attribute -> ?
    assert not torch.equal(other, ids)
    with torch.no_grad():
        loss = gpt.gpt_loss(model, ids, VOCAB)
        other_labels = torch.where(VOCAB.loss_mask(), ids, other)  # attribute targets changed, image targets kept
        assert torch.equal(gpt.gpt_loss(model, ids, VOCAB, labels=VOCAB.labels(other_labels)), loss)
        assert not torch.equal(gpt.gpt_loss(model, other, VOCAB, labels=VOCAB.labels(ids)), loss)  # inputs count


def test_two_accumulated_half_batches_give_the_full_batch_gradient():
    ids = random_sequences(8)
    gradients = []
    for micro_batches in ([ids[:4], ids[4:]], [ids]):
        accelerator = Accelerator(gradient_accumulation_steps=len(micro_batches), cpu=True)
        model = accelerator.prepare(tiny_model(seed=1))
        loss = gpt.accumulate_gradients(accelerator, model, micro_batches, VOCAB)
        gradients.append((loss, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (half_loss, half), (full_loss, full) = gradients
    assert float(half_loss) == pytest.approx(float(full_loss), rel=1e-6)
    for name, gradient in full.items():
        torch.testing.assert_close(half[name], gradient, atol=1e-5, rtol=1e-5, msg=name)
    assert any(g.abs().max() > 1e-3 for g in full.values())  # not trivially zero


def test_accumulate_gradients_refuses_a_wrong_number_of_micro_batches():
    accelerator = Accelerator(gradient_accumulation_steps=2, cpu=True)
    with pytest.raises(ValueError, match="3 micro-batches for an Accelerator that accumulates over 2"):
        gpt.accumulate_gradients(accelerator, tiny_model(), [random_sequences(2)] * 3, VOCAB)


def test_validation_loss_is_the_mean_over_all_image_predictions():
    model, ids = tiny_model().eval(), random_sequences(5).to(torch.int32)
    with torch.no_grad():
        logits = model(ids.long()).logits[:, VOCAB.image_start - 1:VOCAB.end_position]
    targets = ids[:, VOCAB.image_start:].long()
    expected = F.cross_entropy(logits.reshape(-1, VOCAB.size), targets.reshape(-1)).item()
    assert gpt.validation_loss(model, ids, VOCAB, batch_size=2) == pytest.approx(expected, rel=1e-5)  # 2 + 2 + 1
    assert gpt.bits_per_image(expected, VOCAB) == pytest.approx(16 * expected / math.log(2))
    assert gpt.bits_per_image(1.0, Vocabulary(512)) == pytest.approx(256 / math.log(2))


def test_position_losses_are_the_per_position_cross_entropy_and_average_to_the_validation_loss():
    model, ids = tiny_model().eval(), random_sequences(5)
    losses = gpt.position_losses(model, ids, VOCAB, batch_size=2)
    assert losses.shape == (VOCAB.n_image_tokens + 1,)
    with torch.no_grad():
        logits = model(ids).logits
    t = VOCAB.image_start + 3  # the fourth image token is predicted by the logits one position earlier
    expected = F.cross_entropy(logits[:, t - 1], ids[:, t]).item()
    assert losses[3].item() == pytest.approx(expected, rel=1e-5)
    assert losses.mean().item() == pytest.approx(gpt.validation_loss(model, ids, VOCAB), rel=1e-5)


# --- training, resume, save and load ------------------------------------------------------------------------------


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    splits = tiny_splits()
    kwargs = dict(splits=splits, vocab=VOCAB, progress=False, vqvae_fingerprint="abc")
    whole = gpt.train_gpt(TINY, folder=tmp_path / "whole", **kwargs)
    first = gpt.train_gpt(TINY, folder=tmp_path / "split", stop_after=4, **kwargs)  # between two validations
    assert len(first.history) == 4 and not (tmp_path / "split" / "model").exists()
    resumed = gpt.train_gpt(TINY, folder=tmp_path / "split", **kwargs)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in whole.history]
    assert resumed.validation == whole.validation and [v["step"] for v in whole.validation] == [3, 6]
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert whole.history[-1]["loss"] < whole.history[0]["loss"]

    loaded = gpt.load_gpt(tmp_path / "split")
    for key, value in whole.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert loaded.vocab == VOCAB and not loaded.model.training
    assert loaded.tokenizer.decode([16, 0, 18]) == "<START_FACE> <c0> <END_GENERATION>"
    assert loaded.metadata["vqvae"]["fingerprint"] == "abc" and loaded.metadata["profile"] == "ci"
    assert loaded.metadata["val_loss"] == whole.validation[-1]["val_loss"]
    history = json.loads((tmp_path / "split" / "history.json").read_text())
    assert history["validation"] == whole.validation and len(history["train"]) == 6
    assert set(whole.history[0]) == {"step", "loss", "lr"}
    assert whole.validation[0]["bits_per_image"] == pytest.approx(16 * whole.validation[0]["val_loss"] / math.log(2))


def test_a_checkpoint_of_other_settings_is_refused_and_restart_starts_over(tmp_path):
    kwargs = dict(splits=tiny_splits(), vocab=VOCAB, progress=False, folder=tmp_path, stop_after=3)
    first = gpt.train_gpt(TINY, vqvae_fingerprint="old", **kwargs)
    faster = TINY.replace(gpt={"lr": 2 * TINY.gpt.lr})
    with pytest.raises(SettingsChanged) as refused:
        gpt.train_gpt(faster, vqvae_fingerprint="new", **kwargs)
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'checkpoint.pt'} is a GPT checkpoint of other settings (changed: gpt.lr "
                              f"{TINY.gpt.lr!r} -> {2 * TINY.gpt.lr!r}, vqvae 'old' -> 'new')")
    assert "vqvae 'old' -> 'new'" in message and "--restart" in message
    fresh = gpt.train_gpt(faster, vqvae_fingerprint="new", resume=False, **kwargs)
    # a new run from the same initial weights: the same first loss, the new learning rate from step 1 on
    assert fresh.history[0]["loss"] == first.history[0]["loss"]
    assert [h["lr"] for h in fresh.history] == [2 * h["lr"] for h in first.history]


def test_training_learns_images_that_follow_the_attributes(tmp_path):
    profile = TINY.replace(gpt={"steps": 60, "val_every": 60, "dropout": 0.0, "grad_accum": 1, "batch_size": 16,
                                "p_drop_all": 0.0, "p_drop_one": 0.0})
    splits = tiny_splits(64, 16, learnable=True)
    run = gpt.train_gpt(profile, splits, folder=tmp_path, vocab=VOCAB, progress=False, val_sequences=4)
    # an untrained model is close to uniform guessing over the 74 tokens (ln 74 = 4.3 nats; its first loss measured
    # 3.9 with the grid positions); reading the attributes makes the codes certain
    assert run.validation[-1]["val_loss"] < 0.5 < 3.5 < run.history[0]["loss"]
    first_four = gpt.encode_split(splits["valid"], VOCAB)[:4]  # val_sequences: the first 4 sequences only
    assert run.validation[-1]["val_loss"] == pytest.approx(gpt.validation_loss(run.model, first_four, VOCAB), rel=1e-5)


def test_load_gpt_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a trained facegen GPT: missing config.json, model.safetensors"):
        gpt.load_gpt(tmp_path)


def test_check_gpt_matches_vqvae():
    metadata = {"profile": "cpu", "vqvae": {"fingerprint": "a" * 64, "folder": "artifacts/cpu/vqvae"}}
    gpt.check_gpt_matches_vqvae(metadata, "a" * 64)  # no error
    with pytest.raises(ValueError, match=r"trained on tokens of VQ-VAE aaaaaaaaaaaa, not of the current VQ-VAE "
                                         r"bbbbbbbbbbbb: retrain it"):
        gpt.check_gpt_matches_vqvae(metadata, "b" * 64)
    with pytest.raises(ValueError, match="a VQ-VAE it did not record"):
        gpt.check_gpt_matches_vqvae({"vqvae": {"fingerprint": None}}, "b" * 64)


# --- the pipeline and the command line ----------------------------------------------------------------------------


@pytest.fixture
def ci_tokens(tmp_path, monkeypatch):
    """Tokens of the ci profile (512 codes, 16x16) saved where `ensure_tokens` keeps them, with `ensure_tokens`
    itself replaced by reading them (no VQ-VAE is trained here). Returns a function that rewrites the fingerprint."""
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    profile = get_profile("ci")
    folder = tokens_folder(profile)
    tiny_splits(8, 4, codebook=512, grid=16).save_to_disk(str(folder))

    def set_vqvae(fingerprint: str) -> None:
        info = TokenInfo(vqvae=fingerprint, data="d", codebook_size=512, grid_size=16)
        (folder / FINGERPRINT_FILE).write_text(json.dumps(info.__dict__))

    set_vqvae("v1")
    monkeypatch.setattr("facegen.pipeline.ensure_tokens", lambda profile=None, progress=True, **kwargs:
                        datasets.load_from_disk(str(folder)))
    return set_vqvae


def test_ensure_gpt_trains_once_and_never_replaces_it_for_a_new_vqvae(ci_tokens, capsys):
    from facegen.config import training_recipe
    from facegen.errors import ArtifactError
    from facegen.pipeline import ensure_gpt

    profile = get_profile("ci").replace(gpt={"steps": 2, "val_every": 2})
    loaded = ensure_gpt(profile, progress=False)
    assert "training the 'ci' GPT" in capsys.readouterr().out
    assert loaded.metadata["vqvae"]["fingerprint"] == "v1" and loaded.vocab == Vocabulary(512)
    assert loaded.metadata["recipe"] == training_recipe(profile.gpt)  # what a later ensure_gpt compares
    again = ensure_gpt(profile, progress=False)  # already trained for this VQ-VAE: loaded, not trained
    assert "training" not in capsys.readouterr().out and again.metadata == loaded.metadata
    ci_tokens("v2")  # a new VQ-VAE: the trained GPT is kept, and the error says how to retrain it
    with pytest.raises(ArtifactError, match=r"trained on tokens of VQ-VAE v1, not of the current VQ-VAE v2: retrain "
                                            r"it \(`facegen train-gpt --restart --profile ci`\)"):
        ensure_gpt(profile, progress=False)
    assert "training" not in capsys.readouterr().out


def test_cli_train_gpt(ci_tokens, capsys):
    from facegen.cli import main

    assert main(["train-gpt", "--profile", "ci", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "validation loss" in out and "bits per image" in out
    saved = json.loads((get_profile("ci").artifacts / "gpt" / "model" / "facegen.json").read_text())
    assert saved["steps"] == 2 and saved["vqvae"]["fingerprint"] == "v1"


def test_training_in_bf16_mixed_precision_runs_and_keeps_fp32_weights(tmp_path):
    """The gpu profile trains in bf16 autocast; the CPU can run the same path. Its first step once failed on CUDA
    because the loss mask was built on the CPU: here the whole step runs through accelerate's bf16 machinery."""
    profile = TINY.replace(gpt={"mixed_precision": "bf16", "steps": 3, "val_every": 3})
    run = gpt.train_gpt(profile, tiny_splits(), folder=tmp_path, vocab=VOCAB, progress=False, vqvae_fingerprint="x")
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    assert all(math.isfinite(row["loss"]) for row in run.history) and math.isfinite(run.validation[-1]["val_loss"])
    ids = gpt.encode_split(tiny_splits()["valid"], VOCAB)[:2].long()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = gpt.gpt_loss(run.model, ids, VOCAB)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def tiny_pretrained_gpt2(folder, n_embd=32, offset=0.5):
    """A stand-in for the hub's GPT-2 saved with save_pretrained: another vocabulary (200 text tokens) and 64
    positions; its token embeddings are shifted by `offset` so that their statistics are recognisable."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(3)
    donor = GPT2LMHeadModel(GPT2Config(vocab_size=200, n_positions=64, n_layer=2, n_embd=n_embd, n_head=4))
    with torch.no_grad():
        donor.transformer.wte.weight.add_(offset)
    donor.save_pretrained(folder)
    return donor


def test_gpt2_init_copies_the_blocks_and_draws_new_token_embeddings_like_gpt2s(tmp_path):
    donor = tiny_pretrained_gpt2(tmp_path / "gpt2")
    profile = TINY.replace(gpt={"init": "gpt2", "pretrained": str(tmp_path / "gpt2"), "n_layer": 2, "n_embd": 32,
                                "n_head": 4})
    torch.manual_seed(0)
    model = gpt.build_gpt(profile, VOCAB)
    for key, value in donor.transformer.h.state_dict().items():
        assert torch.equal(model.transformer.h.state_dict()[key], value), key
    assert torch.equal(model.transformer.ln_f.weight, donor.transformer.ln_f.weight)
    assert torch.equal(model.transformer.wpe.weight, donor.transformer.wpe.weight[:VOCAB.length])
    wte = model.transformer.wte.weight
    assert wte.shape == (VOCAB.size, 32) and model.lm_head.weight is wte  # tied, as in GPT-2
    # new rows: GPT-2's mean (0.5 per channel here) and spread (init std 0.02), not copies of its text tokens
    assert abs(wte.mean().item() - 0.5) < 0.01 and 0.01 < wte.std(dim=0).mean().item() < 0.03
    assert not any(torch.equal(row, donor.transformer.wte.weight[i]) for i, row in enumerate(wte))
    ids = gpt.encode_split(tiny_splits()["valid"], VOCAB)[:2].long()
    assert math.isfinite(gpt.gpt_loss(model, ids, VOCAB).item())


def test_gpt2_init_trains_and_names_what_does_not_fit(tmp_path, monkeypatch):
    tiny_pretrained_gpt2(tmp_path / "gpt2")
    fits = TINY.replace(gpt={"init": "gpt2", "pretrained": str(tmp_path / "gpt2"), "n_layer": 2, "n_embd": 32,
                             "n_head": 4, "steps": 6})
    run = gpt.train_gpt(fits, tiny_splits(), folder=tmp_path / "run", vocab=VOCAB, progress=False,
                        vqvae_fingerprint="x")
    assert run.history[-1]["loss"] < run.history[0]["loss"]
    with pytest.raises(ValueError, match="the pretrained GPT-2 has n_embd=32, this model 64"):
        gpt.build_gpt(fits.replace(gpt={"n_embd": 64}), VOCAB)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"cannot load the pretrained GPT-2 .*gpt.init='scratch'"):
        gpt.build_gpt(fits.replace(gpt={"pretrained": str(tmp_path / "missing")}), VOCAB)
    with pytest.raises(ValueError, match="gpt.init must be 'scratch' or 'gpt2'"):
        gpt.build_gpt(TINY.replace(gpt={"init": "bert"}), VOCAB)


def test_a_compiled_model_trains_to_the_same_weights_and_saves_the_plain_model(tmp_path):
    """gpt.compile wraps the model in torch.compile; the "eager" backend runs the same wiring without code generation
    (the GPU uses "inductor"): the run, its checkpoint and the saved model are those of the eager run."""
    kwargs = dict(splits=tiny_splits(), vocab=VOCAB, progress=False, vqvae_fingerprint="x")
    plain = gpt.train_gpt(TINY, folder=tmp_path / "plain", **kwargs)
    compiled = gpt.train_gpt(TINY.replace(gpt={"compile": "eager"}), folder=tmp_path / "compiled", **kwargs)
    assert type(compiled.model).__name__ == "GPT2LMHeadModel"  # unwrapped from torch.compile's OptimizedModule
    assert [h["loss"] for h in compiled.history] == pytest.approx([h["loss"] for h in plain.history], rel=1e-5)
    loaded = gpt.load_gpt(tmp_path / "compiled")
    for key, value in compiled.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value.cpu()), key


def test_the_saved_gpt_is_the_moving_average_of_the_steps_weights(tmp_path):
    """Each step's own weights (ema_decay 0 saves the last step's, checkpoint by checkpoint), averaged by hand with
    the warm-up rule, are what a run with ema_decay 0.5 saves; its last validation row also scores the last step."""
    kwargs = dict(splits=tiny_splits(), vocab=VOCAB, progress=False, vqvae_fingerprint="x")
    raw_profile = TINY.replace(gpt={"ema_decay": 0.0, "steps": 3, "val_every": 3})
    steps = []
    for stop in (1, 2, 3):
        run = gpt.train_gpt(raw_profile, folder=tmp_path / "raw", stop_after=stop, **kwargs)
        steps.append({name: value.clone() for name, value in run.model.state_dict().items()})
    raw = run
    assert raw.validation[-1]["val_loss"] == raw.validation[-1]["last_step_val_loss"]

    averaged = gpt.train_gpt(raw_profile.replace(gpt={"ema_decay": 0.5}), folder=tmp_path / "avg", **kwargs)
    d2, d3 = 2 / 11, 3 / 12  # min(0.5, (1 + n) / (10 + n)) at the 1st and 2nd update after the copy
    for name, first in steps[0].items():
        expected = d3 * (d2 * first + (1 - d2) * steps[1][name]) + (1 - d3) * steps[2][name]
        assert torch.allclose(averaged.model.state_dict()[name], expected, atol=1e-6), name
    assert averaged.model.lm_head.weight is averaged.model.transformer.wte.weight
    assert all(p.requires_grad for p in averaged.model.parameters())  # an ordinary model, as load_gpt gives
    last = averaged.validation[-1]
    assert last["last_step_val_loss"] == pytest.approx(raw.validation[-1]["val_loss"], rel=1e-6)
    assert last["val_loss"] != pytest.approx(last["last_step_val_loss"], rel=1e-4)
    assert last["val_loss"] == pytest.approx(gpt.validation_loss(averaged.model, gpt.encode_split(
        tiny_splits()["valid"], VOCAB), VOCAB), rel=1e-6)
