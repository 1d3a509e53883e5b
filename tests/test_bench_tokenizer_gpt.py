"""benchmarks/bench_tokenizer_gpt.py's `--codebook-size` (issue 16) must never train into the course's own artifacts:
its VQ-VAE, tokens and GPT folders are named like the profile's, so without another FACEGEN_ARTIFACTS root they would
replace the notebooks' models."""

from __future__ import annotations

import sys

import pytest

from facegen.config import get_profile


@pytest.fixture(scope="module")
def bench(import_benchmark):
    return import_benchmark("bench_tokenizer_gpt")


def test_another_codebook_size_is_refused_on_the_default_artifacts_root(bench, monkeypatch):
    monkeypatch.delenv("FACEGEN_ARTIFACTS", raising=False)
    monkeypatch.setattr(sys, "argv", ["bench_tokenizer_gpt.py", "--profile", "ci", "--codebook-size", "1024"])
    with pytest.raises(SystemExit, match="FACEGEN_ARTIFACTS") as refused:
        bench.main()
    assert "1024 codes" in str(refused.value)


def test_the_profile_s_own_codebook_size_needs_no_other_root(bench, monkeypatch):
    """Refusing the profile's own size too would stop the default run: the check must come from the size, not the flag.
    The run is stopped right after the check, where it first loads data."""
    monkeypatch.delenv("FACEGEN_ARTIFACTS", raising=False)
    monkeypatch.setattr(sys, "argv", ["bench_tokenizer_gpt.py", "--profile", "ci", "--codebook-size", "512"])

    def stop(*args, **kwargs):
        raise RuntimeError("past the check")

    monkeypatch.setattr(bench, "held_out_set", stop)
    assert get_profile("ci").vqvae.codebook_size == 512
    with pytest.raises(RuntimeError, match="past the check"):
        bench.main()
