"""One training engine for every model of the course, on Hugging Face accelerate.

A trainer builds its model(s) and optimizer(s), hands them to an Engine, and writes only its step:

    with Engine("VQ-VAE", folder, steps, settings=asdict(cfg), val_every=cfg.val_every,
                items_per_step=cfg.batch_size) as engine:
        model, optimizer = engine.prepare(model=model, optimizer=optimizer, scheduler=scheduler)
        for step in engine.steps():
            x = batch(step).to(engine.device)
            with engine.autocast():
                loss = loss_of(model, x)
            engine.optimize(loss, optimizer, scheduler)
            engine.log(loss=loss)
            if engine.validating:
                engine.validation.append({"step": engine.done, **evaluate(model)})
        if engine.finished:
            save_the_model()

What the engine does for all of them:
- device placement and mixed precision through accelerate: bf16 autocast on GPUs that have it, fp16 with a loss
  scaler on older ones, fp32 on a CPU (most CPUs emulate bf16 far slower than fp32; notebook 05 measures yours);
- gradient accumulation (`engine.accelerator.accumulate`) and multi-GPU through `accelerate launch` (models wrapped
  for DDP, one process writes files);
- exact resume: the checkpoint holds every registered object's state, the step, the history and validation rows,
  the seconds spent, every RNG state and the run's settings; a checkpoint of other settings is refused with a
  message naming what changed (`resume=False` starts over);
- cadence: validation rows and a checkpoint every `val_every` steps and at the end; a checkpoint also where
  `stop_after` ends the run early, as an interruption would;
- a progress bar; losses are read back from the device only every `log_every` steps (each read is a host sync that
  stalls a GPU); the speed of the run (items per second);
- a lock on the folder while it trains: two runs writing one folder would overwrite each other's checkpoints.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from tqdm.auto import tqdm

from facegen.checkpoint import artifact_lock, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from facegen.config import changed_settings

CHECKPOINT = "checkpoint.pt"
MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")


def resolve_mixed_precision(setting: str, cuda: bool | None = None) -> str:
    """accelerate's mixed_precision for a profile setting: "auto" is bf16 on CUDA (fp16 on GPUs without bf16, where
    accelerate adds the loss scaler), and "no" on CPU: most CPUs emulate bf16 (~100x slower than fp32 on the AMD
    machines the course was first tested on; CPUs with AMX run it natively), fp32 gives the same numbers on every
    CPU, and fp16 is not supported there. "no", "fp16", "bf16" are used as given."""
    if setting not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}; got {setting!r}")
    if setting != "auto":
        return setting
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_accelerator(mixed_precision: str = "auto", grad_accum: int = 1) -> Accelerator:
    """An Accelerator for one training run. accelerate keeps one process-wide state whose mixed precision cannot
    change once set; asking for another one (a test, or a notebook that switches) starts that state afresh, which
    is safe between runs of a single process (it is not under `accelerate launch`, where the launcher owns it)."""
    precision = resolve_mixed_precision(mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", precision) != precision and not _launched():
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=grad_accum,
                       step_scheduler_with_optimizer=False)  # each trainer steps its scheduler once per update


def _launched() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class SettingsChanged(ValueError):
    """A checkpoint exists but was made with other settings: resuming it would silently mix two runs."""


class Engine:
    """The training loop's scaffolding for one run; see the module docstring for how a trainer uses it."""

    def __init__(self, name: str, folder: Path, steps: int, *, settings: dict, val_every: int,
                 items_per_step: int, mixed_precision: str = "auto", grad_accum: int = 1,
                 stop_after: int | None = None, resume: bool = True, progress: bool = True, log_every: int = 25):
        _check_count(f"{name}: steps", steps, minimum=1)
        _check_count(f"{name}: val_every", val_every, minimum=1)
        if stop_after is not None:
            _check_count(f"{name}: stop_after", stop_after, minimum=0)
        self.name, self.folder, self.total = name, Path(folder), steps
        self.settings = {"steps": steps, **settings}
        self.val_every, self.items_per_step = val_every, items_per_step
        self.end = min(steps, stop_after) if stop_after is not None else steps
        self.resume, self.progress, self.log_every = resume, progress, log_every
        self.accelerator = make_accelerator(mixed_precision, grad_accum)
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.history: list[dict] = []  # one row per step: "step" and the values given to `log`
        self.validation: list[dict] = []  # rows the trainer appends when `validating`
        self.extra: dict[str, Any] = {}  # anything else the trainer wants checkpointed (plain values, tensors)
        self.seconds = 0.0  # training time over all calls, validation included
        self.items_per_second = 0.0  # of this call's steps, everything included
        self.steady_items_per_second = 0.0  # of this call's steps after warm-up, the last step's validation left out
        self.start = self.step = 0
        self.done = 0  # steps finished, counting the one being run (step + 1) while inside `steps()`
        self.validating = False
        self._objects: dict[str, Any] = {}
        self._pending: list[dict] = []
        self._exit = ExitStack()

    # --- setting up --------------------------------------------------------------------------------------------

    def __enter__(self) -> "Engine":
        if self.is_main:
            self._exit.enter_context(artifact_lock(self.folder, self.name))
        return self

    def __exit__(self, *exc) -> None:
        self._exit.close()

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT

    def prepare(self, **objects):
        """Register the run's stateful objects by name (models, optimizers, schedulers, other modules such as an
        averaged model): the checkpoint stores them under these names. Resumes from the checkpoint when there is
        one (and `resume`), then returns the models and optimizers placed by accelerate (on the device, wrapped for
        DDP when launched on several GPUs) in the order given; schedulers and the rest come back unchanged."""
        self._objects = dict(objects)
        if self.resume and self.checkpoint_path.is_file():
            self._load()
        prepared = []
        for obj in objects.values():
            if isinstance(obj, (torch.nn.Module, torch.optim.Optimizer)) and _trainable(obj):
                obj = self.accelerator.prepare(obj)
            elif isinstance(obj, torch.nn.Module):
                obj = obj.to(self.device)
            prepared.append(obj)
        return prepared[0] if len(prepared) == 1 else prepared

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model without accelerate's wrappers (DDP, autocast forward) or torch.compile's: what is saved."""
        model = self.accelerator.unwrap_model(model)
        return getattr(model, "_orig_mod", model)  # torch.compile keeps the original module there

    def autocast(self):
        """The run's mixed-precision context (a no-op in fp32)."""
        return self.accelerator.autocast()

    # --- the loop ----------------------------------------------------------------------------------------------

    def steps(self) -> Iterator[int]:
        """The steps still to run, from the resumed one to `stop_after` or the end. After each, the engine reads
        back logged values every `log_every` steps, and writes a checkpoint every `val_every` steps (when the
        trainer has just appended its validation row) and where the run stops."""
        began = time.perf_counter()
        # smoothing=0: the rate shown is the run's average. tqdm's default moving average jumps after every
        # validation (one step's interval holds it) and ended a 6-minute run of 0.11 s steps reading "1.71s/step".
        bar = tqdm(total=self.total, initial=self.start, desc=self.name, unit="step", smoothing=0,
                   disable=not (self.progress and self.is_main) or self.start >= self.end)  # no bar with nothing to run
        # steady speed: from the start of the `warm`-th step of this call to the start of its last one (two device
        # syncs in all), leaving out warm-up (allocator, kernel choice, torch.compile) and the last validation
        warm, last = self.start + min(5, (self.end - self.start) // 4), self.end - 1
        for step in range(self.start, self.end):
            self.step, self.done = step, step + 1
            self.validating = self.done % self.val_every == 0 or self.done == self.total
            if step in (warm, last) and warm < last:
                self._mark(step, warm)
            yield step
            bar.update(1)
            if self.done % self.log_every == 0 or self.validating or self.done == self.end:
                self._flush(bar)
            if self.validating or self.done == self.end:
                self._save(self.seconds + time.perf_counter() - began)
        bar.close()
        self.validating = False
        elapsed = time.perf_counter() - began
        self.seconds += elapsed
        ran = self.end - self.start
        self.items_per_second = ran * self.items_per_step / elapsed if ran > 0 else 0.0

    def _mark(self, step: int, warm: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if step == warm:
            self._warm_time = now
        else:
            self.steady_items_per_second = (step - warm) * self.items_per_step / (now - self._warm_time)

    @property
    def finished(self) -> bool:
        """True once the run has reached its last step (now or in an earlier call)."""
        return self.done >= self.total or self.start >= self.total

    def saves_trained(self, model: Path) -> bool:
        """Should the trainer write its finished model (and history, speed) to `model`? On the main process of a
        finished run, when this call trained, or when the model is missing. A call that found the run already
        finished writes nothing: it would replace the recorded speed by this call's zero."""
        return self.finished and self.is_main and (self.end > self.start or not Path(model).exists())

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), through accelerate's loss scaler when training in fp16."""
        self.accelerator.backward(loss)

    def update(self, optimizer, scheduler=None, clip_norm: float | None = None, parameters=None) -> None:
        """One optimizer step from the accumulated gradients: clip their norm to `clip_norm` (over `parameters`),
        step, step the scheduler unless fp16's scaler skipped this update (an overflow), and clear the gradients."""
        if clip_norm is not None:
            self.accelerator.clip_grad_norm_(parameters, clip_norm)
        optimizer.step()
        if scheduler is not None and not self.accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    def optimize(self, loss: torch.Tensor, optimizer, scheduler=None, clip_norm: float | None = None,
                 parameters=None) -> None:
        """`backward` then `update`: one plain training step's worth of optimisation, from this loss's gradients
        only (a GAN's generator loss also reaches the discriminator's weights: those must not be carried over)."""
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        self.update(optimizer, scheduler, clip_norm, parameters)

    def log(self, **values) -> None:
        """Record this step's values (tensors or numbers). Tensors are kept on the device until the next read-back,
        so logging costs no host sync; the history row holds floats."""
        self._pending.append({"step": self.done, **{k: v.detach() if torch.is_tensor(v) else v
                                                    for k, v in values.items()}})

    # --- checkpoints -------------------------------------------------------------------------------------------

    def _flush(self, bar) -> None:
        rows = [{k: float(v) for k, v in row.items()} for row in self._pending]
        for row in rows:
            row["step"] = int(row["step"])
        self.history.extend(rows)
        self._pending.clear()
        if rows:
            bar.set_postfix({k: _short(v) for k, v in rows[-1].items() if k != "step"}, refresh=False)

    def _save(self, seconds: float) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:  # one writer; the RNG states saved are the main process's
            objects = {name: self.unwrap(obj) if isinstance(obj, torch.nn.Module) else obj
                       for name, obj in self._objects.items()}
            if self.accelerator.scaler is not None:
                objects["grad_scaler"] = self.accelerator.scaler
            save_checkpoint(self.checkpoint_path, **objects, step=self.done, history=self.history,
                            validation=self.validation, extra=self.extra, seconds=seconds, settings=self.settings)
        self.accelerator.wait_for_everyone()

    def _load(self) -> None:
        fresh = rng_state()
        state = load_checkpoint(self.checkpoint_path)  # restores the RNG states; objects below
        saved = state.get("settings")
        if saved != self.settings:
            set_rng_state(fresh)
            raise SettingsChanged(_settings_message(self.checkpoint_path, saved, self.settings, self.name))
        missing = [name for name in self._objects if name not in state]
        if missing:
            raise ValueError(f"{self.checkpoint_path} lacks {', '.join(missing)}; it was not written by this "
                             f"{self.name} trainer (start over with resume=False / --restart)")
        for name, obj in self._objects.items():
            obj.load_state_dict(state[name])
        if self.accelerator.scaler is not None and "grad_scaler" in state:
            self.accelerator.scaler.load_state_dict(state["grad_scaler"])
        self.start = self.done = state["step"]
        self.history, self.validation = state["history"], state["validation"]
        self.extra, self.seconds = state.get("extra", {}), state["seconds"]


def cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A contiguous copy of `model` on the CPU, for saving: the trained one stays where it is, as it is."""
    return copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)


def _trainable(obj) -> bool:
    if isinstance(obj, torch.optim.Optimizer):
        return True
    return any(p.requires_grad for p in obj.parameters())


def _check_count(what: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _short(value: float) -> str:
    return f"{value:.4g}"


def _settings_message(path: Path, saved: dict | None, current: dict, name: str) -> str:
    if not saved:
        what = "it records no settings (an older facegen wrote it)"
    else:
        what = "changed: " + changed_settings(saved, current)
    return (f"{path} is a {name} checkpoint of other settings ({what}); resume with the settings it was made with, "
            "or start over with resume=False (CLI: --restart), which replaces it")
