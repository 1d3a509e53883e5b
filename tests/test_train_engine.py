"""The training engine every trainer runs on: cadence, exact resume, the settings check, logging, the lock, and
mixed precision (bf16 autocast runs on this CPU too, so the GPU's precision path is exercised here)."""

import subprocess
import sys
import textwrap

import pytest
import torch

from facegen.checkpoint import ArtifactBusyError
from facegen.train.engine import Engine, SettingsChanged, make_accelerator, resolve_mixed_precision
from facegen.train.schedule import batch_indices

X = torch.linspace(-1, 1, 32)[:, None]
Y = 3 * X - 1 + 0.1 * torch.sin(7 * X)  # a line to fit, with a wiggle it cannot


def fit_line(folder, steps=6, stop_after=None, resume=True, lr=0.1, mixed_precision="auto", val_every=3):
    """A tiny trainer written the way the course's trainers are: a linear model fitted by SGD with momentum."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    with Engine("line", folder, steps, settings={"lr": lr}, val_every=val_every, items_per_step=8,
                mixed_precision=mixed_precision, stop_after=stop_after, resume=resume, progress=False,
                log_every=2) as engine:
        model, optimizer, scheduler = engine.prepare(model=model, optimizer=optimizer, scheduler=scheduler)
        for step in engine.steps():
            rows = batch_indices(step, len(X), 8, seed=0)
            noise = 0.01 * torch.randn(8, 1)  # global RNG: must resume exactly too
            with engine.autocast():
                loss = torch.nn.functional.mse_loss(model(X[rows].to(engine.device)).float(),
                                                    (Y[rows] + noise).to(engine.device))
            engine.optimize(loss, optimizer, scheduler)
            engine.log(loss=loss, lr=scheduler.get_last_lr()[0])
            if engine.validating:
                with torch.no_grad():
                    engine.validation.append({"step": engine.done, "mse": float(((model(X) - Y) ** 2).mean())})
        return engine, engine.unwrap(model)


def test_a_run_logs_every_step_validates_on_cadence_and_records_its_speed(tmp_path):
    engine, model = fit_line(tmp_path, steps=7)
    assert [row["step"] for row in engine.history] == list(range(1, 8))
    assert all(isinstance(row["loss"], float) for row in engine.history)  # read back from the device as floats
    assert [row["step"] for row in engine.validation] == [3, 6, 7]  # every val_every, and the last step
    assert engine.history[-1]["loss"] < engine.history[0]["loss"]
    assert engine.finished and engine.seconds > 0 and engine.items_per_second > 0
    assert engine.steady_items_per_second > 0  # measured from step 2 (a quarter of 7 steps) to the last one
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["step"] == 7 and state["settings"] == {"steps": 7, "lr": 0.1}
    assert torch.equal(state["model"]["weight"], model.weight.detach())


def test_an_interrupted_run_resumes_exactly(tmp_path):
    whole, whole_model = fit_line(tmp_path / "whole")
    first, _ = fit_line(tmp_path / "split", stop_after=4)  # between two validations: a checkpoint is still written
    assert not first.finished and len(first.history) == 4
    resumed, resumed_model = fit_line(tmp_path / "split")
    assert resumed.start == 4
    assert resumed.history == whole.history and resumed.validation == whole.validation
    assert torch.equal(resumed_model.weight, whole_model.weight) and torch.equal(resumed_model.bias, whole_model.bias)


def test_a_checkpoint_of_other_settings_is_refused_until_restart(tmp_path):
    fit_line(tmp_path, stop_after=2)
    with pytest.raises(SettingsChanged, match=r"changed: lr 0.1 -> 0.2\); .*--restart"):
        fit_line(tmp_path, lr=0.2)
    with pytest.raises(SettingsChanged, match=r"changed: steps 6 -> 8"):
        fit_line(tmp_path, steps=8)
    restarted, _ = fit_line(tmp_path, lr=0.2, resume=False)
    assert restarted.start == 0 and len(restarted.history) == 6


def test_the_refusal_names_each_changed_setting_inside_its_section(tmp_path):
    """A trainer's settings nest (the GPT's are {"gpt": {...}, "vocabulary": ..., "vqvae": ...}): a setting added
    since the checkpoint was written, or changed, is named alone, not with the whole section around it."""
    from facegen.train.engine import _settings_message

    saved = {"steps": 6, "gpt": {"lr": 0.1, "n_layer": 2}, "vqvae": "a"}
    current = {"steps": 6, "gpt": {"lr": 0.2, "n_layer": 2, "ema_decay": 0.99}, "vqvae": "a"}
    message = _settings_message(tmp_path / "checkpoint.pt", saved, current, "GPT")
    assert "(changed: gpt.ema_decay (unset) -> 0.99, gpt.lr 0.1 -> 0.2); " in message
    assert "n_layer" not in message and "vqvae" not in message


@pytest.mark.parametrize("bad", [0, -5, 2.5, None, True])
def test_steps_must_be_a_positive_integer(tmp_path, bad):
    with pytest.raises(ValueError, match="line: steps must be an integer >= 1"):
        fit_line(tmp_path, steps=bad)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_bf16_mixed_precision_autocasts_the_step_and_keeps_fp32_weights(tmp_path):
    """The gpu profile's precision, on this CPU: the forward runs in bf16, weights and optimizer state stay fp32."""
    engine, model = fit_line(tmp_path, mixed_precision="bf16")
    assert engine.accelerator.mixed_precision == "bf16"
    with engine.autocast():
        assert torch.nn.functional.linear(X, model.weight).dtype == torch.bfloat16
    with torch.no_grad():
        out = model(X)  # accelerate wraps the prepared model: autocast inside, outputs handed back as fp32
    assert out.dtype == torch.float32 and torch.equal(out, out.bfloat16().float())  # computed in bf16
    assert model.weight.dtype == torch.float32
    assert engine.history[-1]["loss"] < engine.history[0]["loss"]
    # the next run in the same process may ask for fp32 again: the process-wide accelerate state follows
    assert make_accelerator("no").mixed_precision == "no"


def test_auto_precision_is_bf16_on_cuda_and_fp32_on_cpu():
    assert resolve_mixed_precision("auto", cuda=False) == "no"
    assert resolve_mixed_precision("bf16", cuda=False) == "bf16"
    with pytest.raises(ValueError, match="fp8"):
        resolve_mixed_precision("fp8")


def test_a_folder_being_trained_by_another_process_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from facegen.checkpoint import artifact_lock
        with artifact_lock({str(tmp_path)!r}, "test"):
            print("locked", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ArtifactBusyError, match=f"pid {holder.pid}"):
            fit_line(tmp_path)
        assert not (tmp_path / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()


def test_optimize_steps_on_this_losss_gradients_only(tmp_path):
    """A GAN's generator loss flows through the discriminator too: the discriminator's update that follows must see
    its own loss's gradients only (a missing zero_grad once weakened both GAN trainers' discriminators)."""
    torch.manual_seed(0)
    generator, discriminator = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    lr = 0.5
    with Engine("gan", tmp_path, 2, settings={}, val_every=2, items_per_step=8, progress=False) as engine:
        generator, discriminator, opt_g, opt_d = engine.prepare(
            generator=generator, discriminator=discriminator,
            opt_g=torch.optim.SGD(generator.parameters(), lr=lr), opt_d=torch.optim.SGD(discriminator.parameters(), lr=lr))
        for _ in engine.steps():
            fake = generator(X[:8])
            engine.optimize(-discriminator(fake).mean(), opt_g)  # also fills the discriminator's .grad
            d_loss = discriminator(fake.detach()).mean()
            expected = torch.autograd.grad(d_loss, list(discriminator.parameters()), retain_graph=True)
            before = [p.detach().clone() for p in discriminator.parameters()]
            engine.optimize(d_loss, opt_d)
            for old, new, grad in zip(before, discriminator.parameters(), expected):
                torch.testing.assert_close(new.detach(), old - lr * grad)


def test_the_progress_bar_shows_the_runs_average_rate(tmp_path, monkeypatch):
    """The rate a finished bar shows is the run's average. tqdm's default moving average does not settle there:
    validations are long single intervals, and a 6-minute run of 0.11 s steps once ended on "1.71s/step"."""
    import time

    from tqdm.auto import tqdm

    import facegen.train.engine as engine_module

    shown = []

    class RecordingBar(tqdm):
        def close(self):
            rate = self.format_dict["rate"]  # what the last display shows; None: tqdm shows n / elapsed
            shown.append((rate or self.n / self.format_dict["elapsed"], self.n / self.format_dict["elapsed"]))
            super().close()

    monkeypatch.setattr(engine_module, "tqdm", RecordingBar)
    with Engine("fast", tmp_path, 120, settings={}, val_every=40, items_per_step=1, progress=True) as engine:
        for _ in engine.steps():
            time.sleep(0.004)
            if engine.validating:
                time.sleep(0.3)
    rate, average = shown[0]  # (tqdm closes a bar again when it is collected)
    assert rate == pytest.approx(average, rel=0.1)
