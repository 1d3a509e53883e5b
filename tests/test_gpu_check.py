"""benchmarks/gpu_check.py keeps working between GPU runs: its `--tiny` mode runs every stage on the CPU.

It is run as a learner on a GPU machine would run it, in a fresh process (`python benchmarks/gpu_check.py`), with
CUDA hidden so that it takes the CPU path even where a GPU is present. About a minute on 2 cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
STAGES = ("data", "peak", "vqvae", "tokenize", "gpt", "gpt_variants", "classifier", "gan_decoder", "sample",
          "explorer")


@pytest.mark.slow
def test_the_gpu_check_runs_every_stage_on_a_cpu_and_writes_the_samples(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)}
    for name in ("FACEGEN_PROFILE", "FACEGEN_DATA", "FACEGEN_ARTIFACTS"):  # the check sets its own
        env.pop(name, None)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "tiny (ci-sized models" in log and "on cpu" in log
    for stage in STAGES:
        assert f"[{stage}] ok in " in log, f"stage {stage} did not report ok:\n{log[-4000:]}"
    assert "tokens/s" in log and "MFU" in log and "faces/s" in log and "matmul peak" in log
    assert "static cache, batch 2" in log
    # the GPT variants at the tiny batch (4 x 1 there): one micro-batch, and torch.compile (eager backend on a CPU)
    assert re.search(r"4 x 1 [0-9,]+ tokens/s, MFU", log) and re.search(r"4 x 1 compiled [0-9,]+ tokens/s", log)
    assert "all stages ok" in log
    # the temporary data and artifacts are removed when --out is given
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("facegen-gpu-check-")]

    png = out / "gpu_check_samples.png"
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
    # rows: validation faces, their reconstructions, samples (128 px each, 2 px white padding)
    assert pixels.shape[0] == 3 * 128 + 4 * 2, pixels.shape
    for row in range(3):
        tile = pixels[2 + row * 130: 130 + row * 130, 2:130]
        assert tile.std() > 1.0, f"row {row} of the samples PNG is blank"


def test_a_failing_stage_is_reported_the_independent_ones_still_run_and_the_exit_status_is_1(monkeypatch, capsys,
                                                                                             tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    ran = []

    def stage(name):
        def run(self):
            ran.append(name)
            if name == "tokenize":
                raise RuntimeError("no datasets here")
            return {}
        return run

    for name in STAGES:
        monkeypatch.setattr(gpu_check.Check, name, stage(name))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    for name in ("FACEGEN_DATA", "FACEGEN_ARTIFACTS"):  # the check sets them: restored after the test
        monkeypatch.delenv(name, raising=False)
    assert gpu_check.main(["--tiny", "--out", str(tmp_path / "out")]) == 1
    log = capsys.readouterr().out
    assert "[tokenize] FAILED: RuntimeError: no datasets here" in log
    assert ran == ["data", "peak", "vqvae", "tokenize", "classifier", "gan_decoder"]  # gpt, sample, explorer need it
    assert "[gpt] skipped: needs tokenize" in log and "[explorer] skipped: needs gpt" in log
    assert "FAILED or skipped: tokenize, gpt, gpt_variants, sample, explorer" in log
