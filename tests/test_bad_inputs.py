"""Bad input is refused clearly (issue 8): 44 bad inputs through the Python API and 16 through the CLI, each
checked for an error that names the argument, what was expected and what was given; the CLI exits with
status 2 and no traceback for every one (``--debug`` shows it).  Plus the NaN-input policy, a file without
read permission, a malicious weights file and an existing run folder.

Covered elsewhere, not repeated here: 30 ``TrainConfig`` field errors (negative lr, epochs 0, unknown
schedule, ...) in ``tests/test_train.py::test_config_validation_names_field_expected_and_given``; an existing
run folder, a missing data folder and num_classes smaller than the data's labels in ``tests/test_train.py``;
the same through the CLI in ``tests/test_train_cli.py::test_cli_user_errors_exit_2_without_traceback``;
model-specific argument checks in the model test files (test_resnet_models, test_mlp, test_wrap, ...).
"""
from __future__ import annotations

import functools
import os
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

from skiplab.blocks.residual import BasicBlock
from skiplab.blocks.wrap import Residual
from skiplab.cli import main
from skiplab.data import Augment, BatchLoader, ImageDataset, load_dataset
from skiplab.models.cifar import cifar_resnet
from skiplab.registry import ModelArgumentError, create_model
from skiplab.train import CheckpointError, TrainConfig, load_checkpoint
from skiplab.weights import load_weights, save_weights


@functools.cache
def r20() -> nn.Module:
    return create_model("resnet20", width=0.25).eval()


def images(n: int = 2, c: int = 3, size: int = 8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, c, size, size).to(dtype)


def dataset(labels: list[int], classes: list[str]) -> ImageDataset:
    n = len(labels)
    return ImageDataset(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.tensor(labels), classes, (0.5,) * 3,
                        (0.25,) * 3, "toy")


class _Evil:
    """Unpickling this would create the file ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.txt").write_text("hello, not weights")
    (d / "folder").mkdir()
    (d / "empty").mkdir()
    torch.save({"w": torch.zeros(1), "x": _Evil(str(d / "pwned"))}, d / "evil.pth")
    save_weights(create_model("resnet20", width=0.25), d / "r20.safetensors")
    return {p.name: p for p in d.iterdir()} | {"dir": d}


# (id, the bad call, exception type, words the message must hold: argument, expectation, what was given)
PY_CASES: list[tuple[str, Callable[[dict[str, Path]], Any], type[BaseException], list[str]]] = [
    # ---- the input tensor
    ("input rank", lambda f: r20()(torch.randn(3, 8, 8)), ValueError, ["input", "4 dims", "(3, 8, 8)"]),
    ("input channels", lambda f: r20()(images(c=1)), ValueError,
     ["input", "in_channels=3", "1 channels", "(2, 1, 8, 8)"]),
    ("input integer dtype", lambda f: r20()(images(dtype=torch.uint8)), TypeError,
     ["input", "floating-point", "torch.uint8"]),
    ("input float64 into float32 model", lambda f: r20()(images(dtype=torch.float64)), TypeError,
     ["input dtype", "torch.float64", "parameter dtype torch.float32"]),
    ("empty batch", lambda f: r20()(images(n=0)), ValueError, ["input batch", "at least one sample", "(0, 3, 8, 8)"]),
    ("not a tensor", lambda f: r20()([[0.0]]), TypeError, ["input", "torch.Tensor", "list"]),
    ("image smaller than the model can pool",
     lambda f: create_model("densenet_bc_100_12", depth=10).eval()(images(size=3)), ValueError,
     ["input", "at least 4x4", "3x3"]),
    ("token id out of range", lambda f: create_model("rnn_classifier", vocab_size=5, hidden_size=4)(
        torch.tensor([[1, 7]])), ValueError, ["token ids", "[0, 5)", "max 7"]),
    # ---- model names and construction arguments
    ("unknown model suggests close names", lambda f: create_model("resnet21"), ValueError,
     ["unknown model 'resnet21'", "Did you mean", "resnet20"]),
    ("unknown model, other spelling", lambda f: create_model("densenet-121"), ValueError,
     ["unknown model 'densenet-121'", "densenet121"]),
    ("CIFAR depth not 6n+2", lambda f: cifar_resnet(21), ValueError, ["depth", "6n+2", "got 21"]),
    ("CIFAR depth too small", lambda f: cifar_resnet(2), ValueError, ["depth", "6n+2", "got 2"]),
    ("zero width", lambda f: create_model("resnet20", width=0), ValueError, ["width", "positive", "got 0"]),
    ("negative width", lambda f: create_model("resnet18", width=-1.0), ValueError, ["width", "positive", "got -1.0"]),
    ("infinite width", lambda f: create_model("resnet20", width=float("inf")), ValueError,
     ["width", "finite", "got inf"]),
    ("zero classes", lambda f: create_model("resnet20", num_classes=0), ValueError,
     ["num_classes", "positive integer", "got 0"]),
    ("negative in_channels", lambda f: create_model("resnet20", in_channels=-3), ValueError,
     ["in_channels", "positive integer", "got -3"]),
    ("zero U-Net width", lambda f: create_model("unet", base_width=0), ValueError,
     ["base_width", "positive integer", "got 0"]),
    ("unknown skip type", lambda f: create_model("resnet20", skip="dense"), ValueError,
     ["skip", "'residual'", "'dense'"]),
    ("unknown shortcut", lambda f: create_model("resnet20", shortcut="E"), ValueError,
     ["shortcut", "'A', 'B', 'C', 'D'", "'E'"]),
    ("no shortcut where a residual block changes shape", lambda f: BasicBlock(16, 32, 2, shortcut="none"),
     ValueError, ["shortcut='none'", "'A', 'B', 'C' or 'D'", "16->32"]),
    ("unknown keyword argument", lambda f: create_model("resnet20", widht=2), ModelArgumentError,
     ["widht", "expected one of", "width", "num_classes"]),
    ("argument the model name fixes", lambda f: create_model("resnet20", depth=56), ModelArgumentError,
     ["depth", "fixes", "depth=56"]),
    ("drop-path rate out of range", lambda f: create_model("resnet20", drop_path_rate=1.5), ValueError,
     ["drop_path_rate", "[0, 1)", "1.5"]),
    # ---- Residual around a shape-changing module
    ("Residual around Linear(4, 8)", lambda f: Residual(nn.Linear(4, 8))(torch.randn(2, 4)), ValueError,
     ["Residual(Linear)", "(2, 4)", "(2, 8)", "equal shapes", "projection"]),
    ("Residual around a strided conv", lambda f: Residual(nn.Conv2d(3, 3, 3, stride=2, padding=1))(images()),
     ValueError, ["Residual(Conv2d)", "(2, 3, 8, 8)", "(2, 3, 4, 4)"]),
    ("Residual with an unknown skip", lambda f: Residual(nn.Linear(4, 4), skip="gated"), ValueError,
     ["skip", "'residual'", "'gated'"]),
    # ---- data
    ("labels out of range", lambda f: dataset([0, 5], ["a", "b"]), ValueError,
     ["ImageDataset.labels", "[0, 2)", "[0, 5]"]),
    ("negative label", lambda f: dataset([-1, 1], ["a", "b"]), ValueError, ["ImageDataset.labels", "[-1, 1]"]),
    ("missing data folder", lambda f: load_dataset("mnist", data_dir=f["empty"]), FileNotFoundError,
     ["mnist not found in", "empty", "train-images-idx3-ubyte"]),
    ("data_dir is a text file", lambda f: load_dataset("imagefolder", data_dir=f["notes.txt"]), FileNotFoundError,
     ["notes.txt", "not a folder or a .tar/.tar.gz/.tgz/.zip archive"]),
    ("batch size 0", lambda f: BatchLoader(load_dataset("synthetic", n_train=8, n_test=4, image_size=8), 0,
                                           shuffle=True), ValueError, ["batch_size", ">= 1", "got 0"]),
    ("negative crop padding", lambda f: Augment(crop_padding=-1), ValueError,
     ["crop_padding", "int >= 0", "got -1"]),
    # ---- files
    ("weights path is a folder", lambda f: load_weights(r20(), f["folder"]), IsADirectoryError,
     ["folder", "is a folder", ".safetensors or .pth file"]),
    ("weights file is text", lambda f: load_weights(r20(), f["notes.txt"]), ValueError,
     ["notes.txt", "not a safetensors or PyTorch weights file"]),
    ("weights of another shape", lambda f: load_weights(create_model("resnet20", width=0.5), f["r20.safetensors"]),
     ValueError, ["shape mismatches", "model [8, 3, 3, 3] vs file [4, 3, 3, 3]"]),
    ("checkpoint path holds no checkpoint", lambda f: load_checkpoint(f["empty"]), CheckpointError,
     ["no checkpoint at", "empty"]),
    ("weights format", lambda f: save_weights(r20(), f["dir"] / "x.onnx", format="onnx"), ValueError,
     ["format", "'skiplab' or 'torchvision'", "'onnx'"]),
    # ---- training settings not covered by test_train.py's table
    ("schedule unit", lambda f: TrainConfig(schedule_unit="iters"), ValueError,
     ["schedule_unit", "'epochs', 'steps'", "'iters'", "did you mean 'steps'"]),
    ("zero evaluation batch", lambda f: TrainConfig(eval_batch_size=0), ValueError,
     ["eval_batch_size", ">= 1", "got 0"]),
    ("lr given as text", lambda f: TrainConfig(lr="0.1"), ValueError, ["lr", "a number", "'0.1'"]),
    ("gamma 0", lambda f: TrainConfig(gamma=0), ValueError, ["gamma", "> 0", "got 0"]),
    ("max_steps 0", lambda f: TrainConfig(epochs=None, max_steps=0), ValueError, ["max_steps", ">= 1", "got 0"]),
    ("unknown recipe", lambda f: TrainConfig.from_recipe("fast2"), ValueError,
     ["recipe", "'he2015', 'fast'", "'fast2'"]),
]


@pytest.mark.parametrize("case", PY_CASES, ids=[c[0] for c in PY_CASES])
def test_python_api_refuses_with_argument_expected_and_given(case, files: dict[str, Path]) -> None:
    _, call, exc, words = case
    with pytest.raises(exc) as e:
        call(files)
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in: {msg}"
    # the error is raised by skiplab's own checks, not from deep inside torch
    assert "site-packages/torch" not in traceback.extract_tb(e.tb)[-1].filename


def test_model_argument_errors_are_also_value_errors() -> None:
    # so the CLI (which treats ValueError as a user error) and code catching TypeError both see them
    with pytest.raises(ValueError):
        create_model("mlp", bogus=1)
    with pytest.raises(TypeError):
        create_model("mlp", bogus=1)


def test_nan_input_policy() -> None:
    """NaN input: models pass it through by default (a check costs a reduction and a host sync per forward);
    ``model.check_finite = True`` refuses it; training stops at the step whose loss is NaN
    (tests/test_train.py::test_nan_from_the_model_names_the_exact_step)."""
    model = create_model("resnet20", width=0.25).eval()
    x = images()
    x[0, 1, 2, 3] = float("nan")
    x[1, 0, 0, 0] = float("inf")
    with torch.no_grad():
        assert torch.isnan(model(x)[0]).all()
        model.check_finite = True
        with pytest.raises(ValueError, match=r"input has 2 NaN/Inf values \(expected finite values"):
            model(x)
        assert torch.isfinite(model(images())).all()  # finite input still runs


@pytest.mark.skipif(not hasattr(os, "fork"), reason="drops root in a forked child")
def test_unreadable_file_names_it() -> None:
    """A weights file without read permission: the error names the file (root ignores permissions, so the
    read happens in a child process that gave up root)."""
    d = Path(tempfile.mkdtemp(prefix="skiplab-unreadable-"))
    try:
        d.chmod(0o755)
        secret = save_weights(r20(), d / "secret.safetensors")
        secret.chmod(0o000)
        report = d / "report.txt"
        report.write_text("")
        report.chmod(0o666)
        pid = os.fork()
        if pid == 0:
            try:
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                load_weights(create_model("resnet20", width=0.25), secret)
                report.write_text("loaded")
            except BaseException as e:  # noqa: BLE001
                report.write_text(f"{type(e).__name__}: {e}")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        text = report.read_text()
        assert text.startswith("PermissionError") and "Permission denied" in text and str(secret) in text, text
    finally:
        for p in d.iterdir():
            p.chmod(0o644)
        import shutil

        shutil.rmtree(d)


def test_malicious_weights_are_refused_without_running(files: dict[str, Path]) -> None:
    # tests/test_weights.py covers the message; here the marker proves nothing ran
    with pytest.raises(ValueError, match="refusing to load"):
        load_weights(r20(), files["evil.pth"])
    assert not (files["dir"] / "pwned").exists()


# ------------------------------------------------------------------------------------------------ the CLI
TRAIN = ["train", "--model", "resnet20", "--model-kwargs", '{"width": 0.25}', "--data", "synthetic",
         "--data-options", '{"n_train": 8, "n_test": 4, "image_size": 8}', "--epochs", "1", "--batch-size", "4",
         "--num-threads", "1"]

# (id, argv after `skiplab` (RUN: a fresh run folder; DIR: the files fixture's folder), words in the message)
CLI_CASES: list[tuple[str, list[str], list[str]]] = [
    ("option value of the wrong type", ["train", "--out", "RUN", "--epochs", "three"],
     ["Invalid value for '--epochs'", "valid integer"]),  # typer's message does not echo the value
    ("unknown option", ["train", "--out", "RUN", "--learning-rate", "0.1"], ["No such option: --learning-rate"]),
    ("missing argument", ["summary"], ["Missing argument 'name'"]),
    ("epochs 0", [*TRAIN, "--out", "RUN", "--epochs", "0"], ["epochs must be >= 1; got 0"]),
    ("unknown model", [*TRAIN, "--out", "RUN", "--model", "resnet21"],
     ["unknown model 'resnet21'", "Did you mean", "resnet20"]),
    ("unknown model keyword", [*TRAIN, "--out", "RUN", "--model-kwargs", '{"widht": 0.25}'],
     ["unexpected keyword argument 'widht'", "expected one of", "width"]),
    ("keyword the model name fixes", [*TRAIN, "--out", "RUN", "--model-kwargs", '{"depth": 21}'],
     ["depth", "fixes depth"]),
    ("negative width", [*TRAIN, "--out", "RUN", "--model-kwargs", '{"width": -1}'],
     ["width must be a positive number", "got -1"]),
    ("unknown dataset", [*TRAIN, "--out", "RUN", "--data", "cifar11"],
     ["unknown dataset 'cifar11'", "cifar10"]),
    ("missing data folder", [*TRAIN, "--out", "RUN", "--data", "cifar10", "--data-options", "{}", "--data-dir",
                             "DIR/no-such-folder"], ["cifar10 not found in", "no-such-folder", "cifar-10-python"]),
    ("input size the model cannot take", ["summary", "densenet121", "--input-size", "3,16,16"],
     ["input is 16x16 pixels", "at least 29x29"]),
    ("input size of the wrong rank", ["summary", "resnet20", "--input-size", "3,32"], ["input must have 4 dims"]),
    ("weights file missing", ["eval", "--weights", "DIR/none.safetensors", "--model", "resnet20"],
     ["weights file not found", "none.safetensors"]),
    ("weights file is a pickle with code", ["eval", "--weights", "DIR/evil.pth", "--model", "resnet20"],
     ["refusing to load", "evil.pth"]),
    ("run is not a checkpoint", ["eval", "--run", "DIR/notes.txt"], ["checkpoint", "notes.txt"]),
    ("unknown experiment", ["experiment", "degradatoin"], ["unknown experiment 'degradatoin'", "degradation"]),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_user_error_exits_2_without_traceback(case, files: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, argv, words = case
    run = tmp_path / "run"
    argv = [a.replace("RUN", str(run)).replace("DIR", str(files["dir"])) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = "".join(capsys.readouterr().err.split())  # rich wraps long lines, inside long paths too
    assert e.value.code == 2, err
    assert "Traceback" not in err
    for w in words:
        assert "".join(w.split()) in err, f"{w!r} not in: {err}"
    assert not run.exists()  # refused before a run folder was created
    assert not (files["dir"] / "pwned").exists()


def test_cli_debug_shows_the_exception() -> None:
    with pytest.raises(ValueError, match="epochs must be >= 1; got 0"):
        main(["--debug", *TRAIN, "--out", "unused", "--epochs", "0"])


def test_cli_training_an_existing_run_needs_overwrite_or_resume(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    main([*TRAIN, "--out", str(run), "--progress", "none"])
    capsys.readouterr()
    before = load_checkpoint(run).path.read_bytes()
    with pytest.raises(SystemExit) as e:
        main([*TRAIN, "--out", str(run)])
    err = "".join(capsys.readouterr().err.split())
    assert e.value.code == 2 and "alreadyexists;pass--overwrite" in err and f"--resume{run}" in err
    assert load_checkpoint(run).path.read_bytes() == before  # untouched
