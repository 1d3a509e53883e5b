"""The GPT: a Hugging Face GPT-2 that learns face token sequences, trained with `accelerate`.

    <START_FACE> <18 attribute tokens> <START_GENERATION> <256 image tokens> <END_GENERATION>     (277 tokens)

The loss is the mean cross-entropy, in nats, over the 257 predictions that matter: the 256 image tokens and
<END_GENERATION> of each sequence. The attributes and specials are given, not predicted (their labels are -100;
Hugging Face shifts the labels itself, so the logits at position t-1 are scored against the token at t).
`bits_per_image` = 256 * loss / ln 2: that per-token mean (END included, which costs next to nothing once learnt)
times the 256 image tokens, i.e. how many bits the model needs to write down one face.

Training (`train_gpt`) runs on the course's engine (facegen/train/engine.py, on `accelerate`), so the same code runs on
a CPU, a GPU with mixed precision, or several GPUs under `accelerate launch -m facegen.cli train-gpt`:
- mixed precision "auto": bf16 on CUDA (fp16 with a loss scaler where bf16 is missing), none on CPU;
- gradient accumulation with `accelerator.accumulate`, AdamW (fused where torch supports it), weight decay on
  matrices only, cosine schedule with warm-up, gradient clipping at 1.0;
- classifier-free guidance training: each batch has attributes replaced by `?` at random (`drop_attributes`);
- batches and their attribute dropout are a pure function of (seed, step), so a checkpoint (model, optimizer,
  scheduler, step, history, RNG states, settings; every `val_every` steps) resumes exactly where the run stopped;
- losses stay on the device between progress updates (no host sync per step), attention is PyTorch's SDPA kernel.

    artifacts/<profile>/gpt/
        checkpoint.pt       the training state (resume)
        history.json        training and validation rows
        model/              config.json, model.safetensors, tokenizer files (save_pretrained of both),
                            facegen.json: the profile and the VQ-VAE whose tokens the GPT speaks (`load_gpt`)
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import transformers
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from facegen.checkpoint import atomic_folder, atomic_write_json
from facegen.config import GPTConfig, Profile, get_profile, training_recipe
from facegen.tokens import Vocabulary, build_hf_tokenizer, vocabulary_from_tokenizer
from facegen.train.averaging import weight_average
from facegen.train.engine import Engine
from facegen.train.schedule import batch_indices, cosine_with_warmup, step_generator, warmup_steps

GPT_DIR = "gpt"
MODEL_DIR = "model"
HISTORY_FILE = "history.json"
METADATA_FILE = "facegen.json"
METADATA_FORMAT = 1
GRAD_CLIP = 1.0
LOSS_DEFINITION = ("val_loss: mean cross-entropy in nats over the 256 image tokens + <END_GENERATION> of every "
                   "validation sequence (257 predictions each); bits_per_image = 256 * val_loss / ln 2")


def gpt_folder(profile: Profile) -> Path:
    return profile.tokenizer_artifacts(GPT_DIR)


# ------------------------------------------------------------------------------------------------------- model


def gpt_config(profile: Profile, vocab: Vocabulary) -> GPT2Config:
    """GPT-2 sized by the profile, with the vocabulary's size, sequence length and special ids."""
    cfg = profile.gpt
    return GPT2Config(
        vocab_size=vocab.size, n_positions=vocab.length, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        # GPT-2's tanh GELU as one fused kernel (gelu_new computes the same curve in five ops, ~5% of a CPU step)
        activation_function="gelu_pytorch_tanh",
        bos_token_id=vocab.start_face_id, eos_token_id=vocab.end_generation_id, pad_token_id=vocab.pad_id)


def _name_the_loss(model: GPT2LMHeadModel) -> GPT2LMHeadModel:
    # transformers finds the loss by the class name; "GPT2LMHeadModel" does not say "ForCausalLM", so without this it
    # warns on stderr at the first loss (which would break nbval) before using the causal-LM loss anyway.
    model.loss_type = "ForCausalLM"
    return model


def grid_position_embeddings(n_embd: int, grid: int, amplitude: float) -> torch.Tensor:
    """(grid * grid, n_embd) starting embeddings for the image positions, in raster order: the cell (row, col) gets
    sinusoids of its row in the first half of the channels and of its column in the second half, each half being
    [sin(x f), cos(x f)] over n_embd / 4 frequencies f from 1 down to 1/100 radian per cell (the Transformer's
    sinusoidal positions, one per axis), times `amplitude`."""
    if n_embd % 4:
        raise ValueError(f"grid position embeddings need n_embd divisible by 4 (sin and cos for each of the two "
                         f"axes), got {n_embd}")
    half = n_embd // 2
    frequencies = torch.exp(-math.log(100.0) * torch.arange(0, half, 2, dtype=torch.float32) / half)
    angles = torch.arange(grid, dtype=torch.float32)[:, None] * frequencies[None]
    axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (grid, half): one code per row or column
    rows = axis[:, None, :].expand(grid, grid, half)
    cols = axis[None, :, :].expand(grid, grid, half)
    return torch.cat([rows, cols], dim=2).reshape(grid * grid, n_embd) * amplitude


def build_gpt(profile: Profile, vocab: Vocabulary) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 for the profile (seed torch first for a reproducible init). Built inside
    `with torch.device("meta"):` it allocates nothing, which is how the `gpu` model's size is measured on a CPU.

    With `profile.gpt.grid_positions`, the image positions' embeddings start as `grid_position_embeddings` instead
    of noise: GPT-2 learns positions from scratch and a face is 2-D, so telling each token its row and column from
    step 0 saves the small `cpu` model some of its few steps. They stay ordinary trainable weights, and the model
    an ordinary GPT2LMHeadModel.

    With `profile.gpt.init == "gpt2"` the model starts from the pretrained GPT-2 instead (`init_from_pretrained`;
    the pretrained positions are kept, so `grid_positions` does not apply)."""
    config = gpt_config(profile, vocab)
    model = _name_the_loss(GPT2LMHeadModel(config))
    if profile.gpt.init == "gpt2":
        init_from_pretrained(model, load_pretrained_gpt2(profile.gpt.pretrained))
        return model
    if profile.gpt.init != "scratch":
        raise ValueError(f"gpt.init must be 'scratch' or 'gpt2', got {profile.gpt.init!r}")
    if profile.gpt.grid_positions:
        wpe = model.transformer.wpe.weight
        grid = grid_position_embeddings(config.n_embd, vocab.grid_size, config.initializer_range)
        with torch.no_grad():
            wpe[vocab.image_start:vocab.image_start + vocab.n_image_tokens] = grid.to(wpe.device)
    return model


def load_pretrained_gpt2(name: str) -> GPT2LMHeadModel:
    """A pretrained GPT-2 from the Hugging Face hub (e.g. "gpt2", cached after the first download, ~550 MB) or from a
    local `save_pretrained` folder; one clear error when it cannot be had (offline, a wrong name)."""
    try:
        with _quiet_transformers():
            return GPT2LMHeadModel.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"cannot load the pretrained GPT-2 {name!r} (gpt.pretrained): {str(error).splitlines()[0]} "
                                f"-- without network access, use gpt.init='scratch' or point gpt.pretrained at a "
                                f"folder written by save_pretrained") from None


@torch.no_grad()
def init_from_pretrained(model: GPT2LMHeadModel, pretrained: GPT2LMHeadModel) -> GPT2LMHeadModel:
    """Start `model` (our vocabulary and length) from a pretrained GPT-2, the seed card's route:

    - the transformer blocks and the final LayerNorm are copied as they are (they must have the same n_layer, n_embd
      and n_head): what GPT-2 learnt about attending and composing features is what we hope transfers;
    - position embeddings: GPT-2's first `n_positions` rows (it has 1,024; a face sequence needs 277);
    - token embeddings: none of GPT-2's text tokens means anything here, so every row is new, drawn from a Gaussian
      with the mean and covariance of GPT-2's own token embeddings: same scale and shape as what the blocks were
      trained to read, but no false meaning. The output layer shares them, as in GPT-2."""
    ours, theirs = model.config, pretrained.config
    for name in ("n_layer", "n_embd", "n_head"):
        if getattr(ours, name) != getattr(theirs, name):
            raise ValueError(f"init_from_pretrained: the pretrained GPT-2 has {name}={getattr(theirs, name)}, this "
                             f"model {getattr(ours, name)}; the blocks can only be copied between models of one shape")
    if theirs.n_positions < ours.n_positions:
        raise ValueError(f"init_from_pretrained: the pretrained GPT-2 has {theirs.n_positions} positions, fewer than "
                         f"the {ours.n_positions} a sequence needs")
    source = pretrained.transformer
    for ours_module, theirs_module in ((model.transformer.h, source.h), (model.transformer.ln_f, source.ln_f)):
        ours_module.load_state_dict(theirs_module.state_dict())
    model.transformer.wpe.weight.copy_(source.wpe.weight[:ours.n_positions])
    old = source.wte.weight.float()
    mean = old.mean(dim=0)
    centred = old - mean
    covariance = centred.T @ centred / len(old)
    # a tiny ridge keeps the Cholesky factorisation defined when the embeddings do not span every direction
    covariance += 1e-6 * covariance.diagonal().mean() * torch.eye(len(mean))
    draws = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance).sample((ours.vocab_size,))
    model.transformer.wte.weight.copy_(draws.to(model.transformer.wte.weight.dtype))
    return model


def count_parameters(config: GPT2Config) -> dict[str, int]:
    """Parameters of the GPT-2 a config describes, counted on the meta device (no memory, no init):
    `total` (the output layer shares the token embedding, so it is counted once), `embedding` (tokens + positions)
    and `non_embedding` (the transformer blocks and the final LayerNorm)."""
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def training_flops_per_token(config: GPT2Config) -> int:
    """Floating-point operations to train on one token (forward + backward = 3 x forward), the usual estimate:

        6 * (non-embedding parameters + vocab_size * n_embd)  +  12 * n_layer * n_positions * n_embd

    Every weight costs a multiply-add per token forward (2 FLOPs) and twice that backward (6 in all). The output layer
    is counted (it shares the token embedding's weights but is a real vocab_size x n_embd matmul); the embedding
    lookups are not (they are reads). The second term is attention itself (scores and weighted sum: 2 * 2 * n_ctx *
    n_embd per layer forward, x3), with the full context n_ctx = n_positions, as in the PaLM paper's appendix B."""
    counts = count_parameters(config)
    matmul_weights = counts["non_embedding"] + config.vocab_size * config.n_embd
    return 6 * matmul_weights + 12 * config.n_layer * config.n_positions * config.n_embd


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (linear layers, embeddings), not on biases and LayerNorm gains,
    which set scales and offsets rather than store patterns. Fused (one kernel for all parameters) where torch
    supports it for the parameters' device and dtype."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a torch or device without the fused kernel
        return torch.optim.AdamW(groups, lr=lr)


# -------------------------------------------------------------------------------------------------------- data


def encode_split(split, vocab: Vocabulary, name: str = "split", chunk: int = 16_384) -> torch.Tensor:
    """The sequences (N, vocab.length) of a tokenized split (columns `codes`, `attributes`), int32 to halve the
    memory of real CelebA (162,770 x 277). Encoded in chunks so no (N, 277) int64 copy is ever made."""
    missing = [column for column in ("codes", "attributes") if column not in split.column_names]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}; expected a tokenized split with `codes` "
                         f"and `attributes` (see facegen/tokenize_dataset.py)")
    table = split.with_format("numpy", columns=["codes", "attributes"])
    ids = torch.empty((len(split), vocab.length), dtype=torch.int32)
    for start in range(0, len(split), chunk):
        rows = table[start:start + chunk]
        codes, attributes = np.asarray(rows["codes"]), np.asarray(rows["attributes"])
        if codes.ndim != 2 or codes.shape[1] != vocab.n_image_tokens:
            raise ValueError(f"{name}: codes hold {codes.shape[-1] if codes.ndim == 2 else codes.shape} tokens per "
                             f"image; the vocabulary expects {vocab.n_image_tokens} ({vocab.grid_size}x"
                             f"{vocab.grid_size})")
        ids[start:start + len(codes)] = vocab.encode_batch(attributes, codes.astype(np.int64)).to(torch.int32)
    return ids


def total_steps(cfg: GPTConfig, n_train: int, processes: int = 1) -> int:
    """`cfg.steps` if set, else enough optimizer steps for `cfg.epochs` passes over `n_train` sequences, each step
    seeing batch_size x grad_accum sequences on each of `processes`."""
    if cfg.steps is not None:
        return cfg.steps
    return cfg.epochs * math.ceil(n_train / (cfg.batch_size * cfg.grad_accum * processes))


def training_batch(ids: torch.Tensor, step: int, micro: int, cfg: GPTConfig, vocab: Vocabulary,
                   rank: int = 0, processes: int = 1) -> torch.Tensor:
    """Micro-batch `micro` of optimizer step `step` on process `rank`: cfg.batch_size sequences (int64) with
    attributes dropped to `?` for classifier-free guidance. A pure function of its arguments (the rows and the
    dropout are seeded from the seed and a global micro-batch counter), so a resumed run sees the same batches."""
    counter = (step * cfg.grad_accum + micro) * processes + rank
    rows = batch_indices(counter, len(ids), cfg.batch_size, cfg.seed)
    return vocab.drop_attributes(ids[rows].long(), cfg.p_drop_all, cfg.p_drop_one, step_generator(cfg.seed, counter))


# -------------------------------------------------------------------------------------------------------- loss


def gpt_loss(model: torch.nn.Module, ids: torch.Tensor, vocab: Vocabulary,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy (nats) over the image tokens and <END_GENERATION> of a batch of sequences (B, length).
    `labels` defaults to `vocab.labels(ids)`: the ids at those positions, -100 elsewhere (the model shifts them)."""
    labels = vocab.labels(ids) if labels is None else labels
    return model(input_ids=ids, labels=labels).loss


def accumulate_gradients(accelerator: Accelerator, model: torch.nn.Module, micro_batches: list[torch.Tensor],
                         vocab: Vocabulary) -> torch.Tensor:
    """Forward and backward of one optimizer step's micro-batches inside `accelerator.accumulate`: afterwards the
    .grad of every parameter holds the gradient of the mean loss over all of them (accelerate divides each loss by
    the number of micro-batches, and skips the gradient all-reduce of multi-GPU runs until the last one).
    Returns the mean loss, detached."""
    if len(micro_batches) != accelerator.gradient_accumulation_steps:
        raise ValueError(f"accumulate_gradients: {len(micro_batches)} micro-batches for an Accelerator that "
                         f"accumulates over {accelerator.gradient_accumulation_steps}")
    losses = []
    for ids in micro_batches:
        with accelerator.accumulate(model):
            loss = gpt_loss(model, ids.to(accelerator.device), vocab)
            accelerator.backward(loss)
        losses.append(loss.detach().float())
    if not accelerator.sync_gradients:  # accelerate's own counter must end the step with us
        raise RuntimeError("accumulate_gradients: the Accelerator did not reach an optimizer step; it was used "
                           "for other micro-batches in between")
    return torch.stack(losses).mean()


def bits_per_image(loss: float, vocab: Vocabulary) -> float:
    """Bits to write down one face at `loss` nats per token: n_image_tokens * loss / ln 2."""
    return vocab.n_image_tokens * loss / math.log(2)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, ids: torch.Tensor, vocab: Vocabulary, batch_size: int = 64,
                    accelerator: Accelerator | None = None) -> float:
    """Mean cross-entropy (nats) over the image tokens + END of every sequence in `ids` (N, length), no attribute
    dropout. With an accelerator, each process scores its share of the rows and the sums are added across
    processes, so every process returns the same number."""
    rank, processes = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    mine = ids[rank::processes]
    predictions_per_sequence = int(vocab.loss_mask().sum())  # 257: every sequence scores the same positions
    for start in range(0, len(mine), batch_size):
        batch = mine[start:start + batch_size].long().to(device)
        total += gpt_loss(model, batch, vocab).double() * len(batch) * predictions_per_sequence
        count += len(batch) * predictions_per_sequence
    model.train(was_training)
    sums = torch.stack([total, count])
    if accelerator is not None:
        sums = accelerator.reduce(sums, reduction="sum")
    return float(sums[0] / sums[1])


@torch.no_grad()
def position_losses(model: torch.nn.Module, ids: torch.Tensor, vocab: Vocabulary, batch_size: int = 64) -> torch.Tensor:
    """Mean cross-entropy (nats) at each scored position over the sequences `ids` (N, length): a float tensor of
    n_image_tokens + 1 values, the 256 image tokens in raster order, then <END_GENERATION>. Their mean is
    `validation_loss`; `[:-1].reshape(grid, grid)` shows where in a face the model spends its bits."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros(vocab.n_image_tokens + 1, dtype=torch.float64)
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size].long().to(device)
        logits = model(input_ids=batch).logits[:, vocab.image_start - 1:vocab.end_position]  # predicts image + END
        targets = batch[:, vocab.image_start:vocab.end_position + 1]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")
        total += losses.sum(0).double().cpu()
    model.train(was_training)
    return (total / len(ids)).float()


# ---------------------------------------------------------------------------------------------------- training


@dataclass
class GPTRun:
    model: GPT2LMHeadModel  # the weights' moving average (`ema_decay`): what is saved; on the training device
    vocab: Vocabulary
    folder: Path
    steps: int  # the run's total optimizer steps
    history: list[dict] = field(default_factory=list)  # per step: step, loss, lr, tokens_per_second
    # step, val_loss (nats/token), bits_per_image of the averaged weights; the last row also last_step_val_loss
    validation: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    tokens_per_second: float = 0.0  # all 277 positions of every sequence trained on, all processes
    steady_tokens_per_second: float = 0.0  # the same after warm-up (what MFU is measured from)
    is_main_process: bool = True


def _run_settings(profile: Profile, vocab: Vocabulary, vqvae: str | None) -> dict:
    """What a checkpoint must match to be resumed: the same settings, vocabulary, length and VQ-VAE."""
    return {"gpt": asdict(profile.gpt), "vocabulary": _vocab_dict(vocab), "vqvae": vqvae}


def _vocab_dict(vocab: Vocabulary) -> dict:
    return {"codebook_size": vocab.codebook_size, "grid_size": vocab.grid_size, "attributes": list(vocab.attributes)}


def _current_vqvae_fingerprint(profile: Profile) -> str | None:
    from facegen.tokenize_dataset import read_token_info, tokens_folder

    info = read_token_info(tokens_folder(profile))
    return info.vqvae if info is not None else None


def _saved_token_splits(profile: Profile):
    """The profile's token shards as written by `facegen tokenize` (facegen.pipeline.ensure_tokens builds them)."""
    from facegen.tokenize_dataset import load_token_splits

    return load_token_splits(profile)


def train_gpt(profile: Profile | None = None, splits=None, folder: Path | None = None, steps: int | None = None,
              stop_after: int | None = None, resume: bool = True, progress: bool = True,
              vocab: Vocabulary | None = None, vqvae_fingerprint: str | None = None,
              val_sequences: int | None = None) -> GPTRun:
    """Train (or resume) the profile's GPT on a tokenized DatasetDict (`splits`, default: the profile's saved token
    shards), then save model, tokenizer and facegen.json into `folder`/model (default artifacts/<profile>/gpt).

    `steps` overrides `total_steps(profile.gpt, ...)`; `stop_after` ends the run at that step with a checkpoint, as
    an interruption would; `resume=False` starts over. `vocab` defaults to the profile's; `vqvae_fingerprint`
    (recorded in facegen.json and the checkpoint) to that of the VQ-VAE in the profile's token folder.
    `val_sequences` limits validation to the first that many valid sequences (the same ones every time; default:
    all), to keep validation cheap on a CPU. Runs on the profile's device in its mixed precision (bf16 on CUDA),
    and on several GPUs under `accelerate launch`."""
    profile = profile or get_profile()
    cfg = profile.gpt
    vocab = vocab or Vocabulary.for_profile(profile)
    folder = Path(folder or gpt_folder(profile))
    splits = _saved_token_splits(profile) if splits is None else splits
    vqvae_fingerprint = vqvae_fingerprint or _current_vqvae_fingerprint(profile)
    for name in ("train", "valid"):
        if name not in splits:
            raise ValueError(f"train_gpt: splits must hold 'train' and 'valid'; got {', '.join(splits) or 'none'}")
    train_ids = encode_split(splits["train"], vocab, "train")
    val_ids = encode_split(splits["valid"], vocab, "valid")[:val_sequences]

    torch.manual_seed(cfg.seed)
    model = build_gpt(profile, vocab)
    averaged = weight_average(model, cfg.ema_decay)  # what is validated and saved
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    sequences_per_step = cfg.batch_size * cfg.grad_accum
    with Engine("GPT", folder, total_steps(cfg, len(train_ids)) if steps is None else steps,
                settings=_run_settings(profile, vocab, vqvae_fingerprint), val_every=cfg.val_every,
                items_per_step=sequences_per_step * vocab.length, mixed_precision=cfg.mixed_precision,
                grad_accum=cfg.grad_accum, stop_after=stop_after, resume=resume, progress=progress) as engine:
        accelerator, processes = engine.accelerator, engine.accelerator.num_processes
        if steps is None and processes > 1:  # an epoch is shared by the processes: fewer steps each
            raise ValueError("train_gpt: pass `steps` explicitly when launched on several processes")
        scheduler = cosine_with_warmup(optimizer, warmup=warmup_steps(engine.total, cfg.warmup_steps),
                                       total=engine.total)
        model, optimizer, scheduler, averaged = engine.prepare(model=model, optimizer=optimizer, scheduler=scheduler,
                                                               averaged=averaged)
        if cfg.compile:
            model = torch.compile(model, backend=cfg.compile)
        model.train()
        for step in engine.steps():
            micro_batches = [training_batch(train_ids, step, micro, cfg, vocab, accelerator.process_index, processes)
                             for micro in range(cfg.grad_accum)]
            lr = optimizer.param_groups[0]["lr"]
            loss = accumulate_gradients(accelerator, model, micro_batches, vocab)
            engine.update(optimizer, scheduler, clip_norm=GRAD_CLIP, parameters=model.parameters())
            averaged.update_parameters(engine.unwrap(model))
            engine.log(loss=loss, lr=lr)
            if engine.validating:
                engine.validation.append(_validation_row(engine, model, averaged.module, val_ids, vocab, cfg))
                if progress and engine.is_main:
                    tqdm.write(f"step {engine.done}: validation loss {engine.validation[-1]['val_loss']:.4f} nats "
                               f"per image token ({engine.validation[-1]['bits_per_image']:,.0f} bits per image)")
        # handed back as an ordinary model (trainable, like one from load_gpt); the average was frozen only while
        # it followed the training
        run = GPTRun(model=averaged.module.requires_grad_(True), vocab=vocab, folder=folder, steps=engine.total,
                     history=engine.history, validation=engine.validation, seconds=engine.seconds,
                     tokens_per_second=engine.items_per_second * processes,
                     steady_tokens_per_second=engine.steady_items_per_second * processes,
                     is_main_process=engine.is_main)
        if engine.saves_trained(folder / MODEL_DIR):
            save_trained(run, profile, vqvae_fingerprint)
        accelerator.wait_for_everyone()
    return run


def _validation_row(engine: Engine, model: torch.nn.Module, averaged: torch.nn.Module, ids: torch.Tensor,
                    vocab: Vocabulary, cfg: GPTConfig) -> dict:
    """The validation loss of the averaged weights (what is saved); at the last step also that of the last step's
    own weights, to show what averaging bought."""
    with engine.autocast():  # the averaged copy is not wrapped by accelerate: give it the run's precision here
        val = validation_loss(averaged, ids, vocab, cfg.batch_size, engine.accelerator)
    row = {"step": engine.done, "val_loss": val, "bits_per_image": bits_per_image(val, vocab)}
    if engine.done == engine.total:
        row["last_step_val_loss"] = validation_loss(model, ids, vocab, cfg.batch_size, engine.accelerator)
    return row


# ------------------------------------------------------------------------------------------------ save and load


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' own progress bars (writing and loading weights): stderr noise in notebooks."""
    was_enabled = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers.utils.logging.enable_progress_bar()


def save_trained(run: GPTRun, profile: Profile, vqvae_fingerprint: str | None) -> Path:
    """model/ (model + tokenizer via save_pretrained, and facegen.json), swapped in whole so a reader never sees a
    half-written folder; and history.json next to it."""
    from facegen.vqvae_training import vqvae_folder

    target = run.folder / MODEL_DIR
    last = run.validation[-1] if run.validation else {}
    metadata = {
        "format": METADATA_FORMAT,
        "profile": profile.name,
        "vqvae": {"fingerprint": vqvae_fingerprint, "folder": str(vqvae_folder(profile))},
        "vocabulary": _vocab_dict(run.vocab),
        "recipe": training_recipe(profile.gpt),  # what ensure_gpt compares with the profile's current settings
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "steps": run.steps,
        "seconds": run.seconds,
        "val_loss": last.get("val_loss"),
        "bits_per_image": last.get("bits_per_image"),
        "loss_definition": LOSS_DEFINITION,
    }
    with atomic_folder(target) as tmp:
        with _quiet_transformers():
            run.model.save_pretrained(tmp)
        build_hf_tokenizer(run.vocab).save_pretrained(tmp)
        atomic_write_json(tmp / METADATA_FILE, metadata)
    atomic_write_json(run.folder / HISTORY_FILE, {"train": run.history, "validation": run.validation,
                                                   "seconds": run.seconds, "loss_definition": LOSS_DEFINITION})
    return target


class LoadedGPT(NamedTuple):
    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerFast
    vocab: Vocabulary
    metadata: dict


REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", METADATA_FILE)


def load_gpt(folder: Path, device: str = "cpu") -> LoadedGPT:
    """(model in eval mode, tokenizer, vocab, metadata) from a saved GPT: the model/ folder or its parent.
    Any problem with a file (missing, truncated, not what it should be) is one error naming it."""
    folder = Path(folder)
    if (folder / MODEL_DIR / METADATA_FILE).is_file() or (folder / MODEL_DIR).is_dir():
        folder = folder / MODEL_DIR
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a trained facegen GPT: missing {', '.join(missing)} "
                                "(train one with `facegen train-gpt`)")
    metadata = _read_json_object(folder / METADATA_FILE, "the GPT's facegen metadata")
    config = _read_json_object(folder / "config.json", "a GPT-2 config (save_pretrained)")
    try:
        config = GPT2Config.from_dict(config)
    except Exception as error:  # noqa: BLE001 - any failure is the file's
        raise ValueError(f"{folder / 'config.json'} is not a GPT-2 config ({error})") from None
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
        vocab = vocabulary_from_tokenizer(tokenizer)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{folder / 'tokenizer.json'} is not a facegen tokenizer ({type(error).__name__}: "
                         f"{error})") from None
    weights = folder / "model.safetensors"
    _check_safetensors(weights)
    try:
        with _quiet_transformers():
            model, info = GPT2LMHeadModel.from_pretrained(str(folder), config=config, output_loading_info=True)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"{weights} cannot be loaded as the GPT-2 that config.json describes "
                         f"({type(error).__name__}: {error})") from None
    problems = {kind: keys for kind, keys in info.items() if keys and kind != "error_msgs"}
    if problems:
        raise ValueError(f"{weights} does not match config.json: {problems}")
    if model.config.vocab_size != vocab.size or model.config.n_positions < vocab.length:
        raise ValueError(f"{folder}: the model (vocab_size {model.config.vocab_size}, n_positions "
                         f"{model.config.n_positions}) does not fit its tokenizer ({vocab.size} tokens, sequences of "
                         f"{vocab.length})")
    return LoadedGPT(_name_the_loss(model).to(device).eval(), tokenizer, vocab, metadata)


def _read_json_object(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{path} is not readable JSON ({error}); expected {what}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}; expected {what} (an object)")
    return value


def _check_safetensors(path: Path) -> None:
    """Open the file's header and every tensor's byte range: a truncated or foreign file fails here, named."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                f.get_slice(key)
    except Exception as error:  # noqa: BLE001 - SafetensorError, OSError, ...
        raise ValueError(f"{path} is not a readable safetensors file ({error}); expected the saved weights "
                         "(truncated or overwritten?)") from None


def check_gpt_matches_vqvae(metadata: dict, vqvae_fingerprint: str) -> None:
    """Raise a ValueError unless the GPT (its facegen.json `metadata`) was trained on tokens of the VQ-VAE with this
    fingerprint (`vqvae_fingerprint(model)` in facegen/tokenize_dataset.py): another VQ-VAE's code 17 means something
    else, so its samples would decode to noise."""
    saved = (metadata.get("vqvae") or {}).get("fingerprint")
    if saved != vqvae_fingerprint:
        trained = f"VQ-VAE {saved[:12]}" if saved else "a VQ-VAE it did not record"
        raise ValueError(f"this GPT (profile {metadata.get('profile')!r}) was trained on tokens of {trained}, not of "
                         f"the current VQ-VAE {str(vqvae_fingerprint)[:12]}: retrain it (`facegen train-gpt "
                         f"--restart --profile {metadata.get('profile') or '<profile>'}`) or use the VQ-VAE it was "
                         "trained with")


def gpt_stale_reason(folder: Path, vqvae_fingerprint: str | None) -> str | None:
    """Why the GPT saved in `folder` (its model/ subfolder) cannot be used with this VQ-VAE, or None when it can."""
    metadata_file = Path(folder) / MODEL_DIR / METADATA_FILE
    if not metadata_file.is_file() or not (metadata_file.parent / "model.safetensors").is_file():
        return "no trained GPT yet"
    try:
        saved = json.loads(metadata_file.read_text())
    except ValueError:
        return f"{metadata_file} is unreadable"
    if (saved.get("vqvae") or {}).get("fingerprint") != vqvae_fingerprint:
        return "it was trained for another VQ-VAE"
    return None


def describe_gpt(metadata: dict) -> str:
    """One line from a saved GPT's facegen.json: parameters, steps and the validation loss, with what it averages."""
    m = metadata
    return (f"GPT ({m['parameters']:,} parameters, {m['steps']:,} steps): validation loss {m['val_loss']:.4f} nats "
            f"per image token (256 image tokens + END) = {m['bits_per_image']:,.0f} bits per image")
