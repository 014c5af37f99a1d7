"""Smoke tests for examples/: each script runs end to end on real MNIST with its --quick setting (a few steps, one
thread), prints what it promises, and exits 0.  The full runs and their accuracies are in the README."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skiplab.cli import main

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
ACC = r"held-out accuracy\s+(\d+\.\d)%"
# script -> lines its output must hold (each with an accuracy)
EXAMPLES = {
    "mnist_residual_conv_torch.py": ["plain", "residual"],
    "mnist_residual_conv_keras.py": ["plain", "residual"],
    "seq_mnist_bilstm_torch.py": ["plain", "residual"],
    "seq_mnist_bilstm_keras.py": ["plain", "residual"],
    "own_loop_torch.py": [""],
}


def run_example(script: str, *extra: str) -> str:
    assert (MNIST / "t10k-images-idx3-ubyte.gz").is_file(), f"the examples read real MNIST from {MNIST}; not found"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "2"}
    threads = [] if "keras" in script else ["--threads", "1"]
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--quick", *threads, *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs(script: str) -> None:
    out = run_example(script)
    for name in EXAMPLES[script]:
        found = re.search(rf"^{name}.*{ACC}", out, re.MULTILINE)
        assert found, f"{script}: no '{name} ... held-out accuracy' line in:\n{out}"
        assert 0.0 <= float(found.group(1)) <= 100.0


def test_seq_example_trains_the_registry_rnn_classifier() -> None:
    out = run_example("seq_mnist_bilstm_torch.py", "--model", "rnn_classifier")
    assert "rnn_classifier" in out and re.search(rf"^residual.*{ACC}", out, re.MULTILINE), out


def test_examples_are_all_smoke_tested() -> None:
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES)


def test_cli_says_rnn_classifier_needs_sequences(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`skiplab train` feeds images; for rnn_classifier it says so, and where sequence training is shown."""
    with pytest.raises(SystemExit) as stop:
        main(["train", "--model", "rnn_classifier", "--data", "synthetic", "--data-options",
              '{"n_train": 32, "n_test": 16, "image_size": 8}', "--batch-size", "16", "--max-steps", "1",
              "--num-threads", "1", "--progress", "none", "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    err = " ".join(err.split())  # rich wraps long lines
    assert "rnn_classifier takes sequences (batch, time, input_size=16)" in err, err
    assert "images of shape (16, 3, 8, 8)" in err, err
    assert "examples/seq_mnist_bilstm_torch.py" in err, err
