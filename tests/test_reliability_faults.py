"""Fault survival of a training run (issue 8): kill -9 at nine named moments and once from outside at an
arbitrary one, SIGTERM/SIGINT sent from another process, a run folder that cannot be written, a disk that
fills up half-way through a checkpoint, and a data folder that is gone when a run resumes; and two numerics
promises not tested elsewhere: gradient clipping bounds the update, the same seed gives the same weights.

Every faulty run happens in a *forked child* of the test process (torch already imported, one thread), so a
kill costs milliseconds instead of a fresh interpreter; the resume then runs here, in-process, and must end
with weights bitwise equal to an uninterrupted run.  ``tests/test_train_cli.py`` kills ``python -m skiplab``
processes at five moments of another configuration; ``tests/test_train.py`` covers in-process signal stops,
the NaN guard and refusal of an existing run folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from skiplab.train import CheckpointError, TrainConfig, load_checkpoint, train
from skiplab.train import checkpoint as ckpt_mod
from skiplab.train import faults
from skiplab.train.metrics import TIMING_FIELDS

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX fork, signals and rlimits")

DATA = {"n_train": 160, "n_test": 48, "image_size": 8}
# val_split=32 leaves 128 training images: 4 steps per epoch at batch 32, 12 in all.  Each evaluation runs
# 2 validation + 3 test batches of 16.  Nesterov SGD, clipping, smoothing and augmentation all carry state
# (momentum buffers, RNG, loader position) that a resume must restore exactly.
SETTINGS: dict[str, Any] = dict(
    model="resnet20", model_kwargs={"width": 0.25}, data="synthetic", data_options=DATA, val_split=32, epochs=3,
    batch_size=32, eval_batch_size=16, lr=0.05, nesterov=True, grad_clip=2.0, label_smoothing=0.1, num_threads=1,
    log_every=2, seed=5, progress="none",
)
TOTAL_STEPS = 12


def config(run: Path, **over: Any) -> TrainConfig:
    return TrainConfig(**{**SETTINGS, "out": str(run), **over})


# ------------------------------------------------------------------------------------------------ helpers
def in_child(fn: Callable[[], Any], *, fault: str | None = None, timeout: float = 120.0,
             on_start: Callable[[int], None] | None = None) -> tuple[str, int, str]:
    """Run ``fn()`` in a forked child process and wait for it.  Returns ``("signal", signum, text)`` when it
    was killed, ``("exit", code, text)`` otherwise; ``text`` is the exception the child raised ("" if none).
    ``on_start(pid)`` runs in the parent while the child works (to send it signals)."""
    fd, report = tempfile.mkstemp(prefix="skiplab-child-", suffix=".txt")
    os.close(fd)
    os.chmod(report, 0o666)  # a child that dropped root must still be able to report
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            torch.set_num_threads(1)  # before any parallel work: forked OpenMP pools must not be reused
            os.environ.pop(faults.ENV, None)
            if fault:
                os.environ[faults.ENV] = fault
            faults.reset()
            fn()
        except SystemExit as e:  # the CLI's exit status
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            code = 99
            Path(report).write_text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    try:
        if on_start is not None:
            on_start(pid)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"child still running after {timeout} s")
            time.sleep(0.005)
        text = Path(report).read_text()
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):  # never leave a child behind
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        Path(report).unlink(missing_ok=True)
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status), text
    return "exit", os.WEXITSTATUS(status), text


def wait_for_step(run: Path, step: int, pid: int, timeout: float = 60.0) -> None:
    """Block until the run's metrics log holds a record at ``step`` or later (the child is then in the loop)."""
    deadline = time.monotonic() + timeout
    log = run / "metrics.jsonl"
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("step", -1) >= step:
                        return
        if os.waitpid(pid, os.WNOHANG)[0]:
            raise AssertionError("the child ended before reaching the step")
        time.sleep(0.002)
    raise AssertionError(f"no metrics record at step {step} within {timeout} s")


def metrics(run: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING_FIELDS}
            for x in (run / "metrics.jsonl").read_text().splitlines()]


def assert_nothing_half_written(run: Path, *, status: str | None = None) -> int | None:
    """Everything under a final name in a stopped run folder is whole and valid; returns the latest
    checkpoint's step (None if there is none).  ``status``: None for a run that died (no result.json),
    "interrupted" for a clean signal stop (result.json says so).  Neither has model.safetensors, the file
    only a completed run leaves."""
    json.loads((run / "manifest.json").read_text())  # written atomically: always whole JSON
    for line in (run / "metrics.jsonl").read_text().splitlines()[:-1]:
        json.loads(line)  # appended line by line: at most the last line may be cut short
    assert not (run / "model.safetensors").exists()
    if status is None:
        assert not (run / "result.json").exists()
    else:
        assert json.loads((run / "result.json").read_text())["final"]["status"] == status
    latest = run / "checkpoints" / "latest.safetensors"
    if not latest.exists():
        return None
    finals = [p for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")]
    assert [p.name for p in finals] == ["latest.safetensors"]
    return load_checkpoint(latest).meta["step"]  # the checksum verifies every byte


def assert_bitwise(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs from the uninterrupted run"


@pytest.fixture(autouse=True)
def _no_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run: final weights and metric records."""
    assert not os.environ.get(faults.ENV)
    faults.reset()
    run = tmp_path_factory.mktemp("baseline") / "run"
    r = train(config(run))
    assert r.status == "completed" and r.step == TOTAL_STEPS
    return {"weights": {k: v.clone() for k, v in r.model.state_dict().items()}, "metrics": metrics(run)}


def resume_and_compare(run: Path, baseline: dict[str, Any]) -> None:
    faults.reset()
    r = train(TrainConfig(resume=str(run)))
    assert r.status == "completed" and r.step == TOTAL_STEPS
    assert_bitwise(r.model.state_dict(), baseline["weights"])
    assert_bitwise(load_checkpoint(run).model_state, baseline["weights"])
    assert not list((run / "checkpoints").glob(".*.tmp"))  # the killed writer's temp file is gone
    assert metrics(run) == baseline["metrics"]  # the log reads as if the run had never stopped
    assert json.loads((run / "result.json").read_text())["final"]["status"] == "completed"


# ------------------------------------------------------------------------------------------------ kill -9
# (fault point, latest checkpoint's step after the kill).  Checkpoints are written at steps 4, 8 and 12.
KILL_MOMENTS = [
    ("step:2", None),  # mid-epoch 1, before any checkpoint exists
    ("ckpt_write:1", None),  # half-way through writing the first checkpoint's temp file
    ("step:6", 4),  # mid-epoch 2
    ("eval:7", 4),  # epoch 2's evaluation, on the validation split
    ("eval:10", 4),  # epoch 2's evaluation, last test batch
    ("ckpt_write:2", 4),  # half-way through writing epoch 2's checkpoint: epoch 1's must survive
    ("ckpt_done:2", 8),  # just after epoch 2's checkpoint was renamed into place
    ("step:12", 8),  # after the last optimizer step, before the final evaluation
    ("ckpt_done:3", 12),  # after the final checkpoint, before model.safetensors and result.json
]


@pytest.mark.parametrize("moment, latest_step", KILL_MOMENTS, ids=[m for m, _ in KILL_MOMENTS])
def test_kill_9_then_resume_is_bitwise_identical(tmp_path: Path, baseline: dict[str, Any], moment: str,
                                                 latest_step: int | None) -> None:
    run = tmp_path / "run"
    how, sig, text = in_child(lambda: train(config(run)), fault=moment)
    assert (how, sig) == ("signal", signal.SIGKILL), text
    assert assert_nothing_half_written(run) == latest_step
    if moment.startswith("ckpt_write"):
        assert list((run / "checkpoints").glob(".latest.safetensors.*.tmp")), "the kill should leave a temp file"
    if latest_step is None:
        # Nothing to resume from: --resume says so, and starting over reproduces the uninterrupted run.
        with pytest.raises(CheckpointError, match="no checkpoint"):
            train(TrainConfig(resume=str(run)))
        with pytest.raises(FileExistsError, match="already exists"):
            train(config(run))  # the partial folder is not silently reused...
        r = train(config(run, overwrite=True))  # ...but may be replaced
        assert_bitwise(r.model.state_dict(), baseline["weights"])
        assert metrics(run) == baseline["metrics"]
    else:
        resume_and_compare(run, baseline)


def test_kill_9_from_outside_at_an_arbitrary_moment(tmp_path: Path, baseline: dict[str, Any]) -> None:
    # The parent kills the child as soon as step 4 is logged: somewhere in epoch 1's evaluation or its
    # checkpoint write, a moment no fault point chooses.
    run = tmp_path / "run"
    how, sig, text = in_child(lambda: train(config(run)),
                              on_start=lambda pid: (wait_for_step(run, 4, pid), os.kill(pid, signal.SIGKILL)))
    assert (how, sig) == ("signal", signal.SIGKILL), text
    step = assert_nothing_half_written(run)
    assert step in (None, 4, 8), step
    if step is None:
        train(config(run, overwrite=True))
        assert_bitwise(load_checkpoint(run).model_state, baseline["weights"])
    else:
        resume_and_compare(run, baseline)


# ------------------------------------------------------------------------------------------------ signals
def cli_args(run: Path) -> list[str]:
    args = ["train", "--out", str(run), "--progress", "lines"]
    for k, v in SETTINGS.items():
        if k == "progress":
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else f"--no-{k.replace('_', '-')}")
        else:
            args += [flag, json.dumps(v) if isinstance(v, dict) else str(v)]
    return args


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_from_another_process_stops_cleanly_with_resume_command(tmp_path: Path, baseline: dict[str, Any],
                                                                      sig: signal.Signals, status: int) -> None:
    from skiplab.cli import main

    run, err = tmp_path / "run", tmp_path / "stderr.txt"

    def child() -> None:
        sys.stderr = open(err, "w")  # the CLI's messages go to stderr  # noqa: SIM115
        main(cli_args(run))

    how, code, text = in_child(child, on_start=lambda pid: (wait_for_step(run, 6, pid), os.kill(pid, sig)))
    assert (how, code) == ("exit", status), text + err.read_text()
    words = "".join(err.read_text().split())  # rich wraps long lines, inside long paths too
    stopped = int(words.split(f"stoppedby{sig.name}atstep")[1].split("/")[0])
    assert 6 <= stopped < TOTAL_STEPS
    assert f"{sig.name}received:stoppingafterthisstep" in words
    assert f"Resumewith:skiplabtrain--resume{run}" in words and "Traceback" not in words
    assert load_checkpoint(run).meta["step"] == stopped  # the checkpoint is of the step it stopped at
    assert assert_nothing_half_written(run, status="interrupted") == stopped
    main(["train", "--resume", str(run), "--progress", "none"])
    assert_bitwise(load_checkpoint(run).model_state, baseline["weights"])


# ------------------------------------------------------------------------------------------------ file system
def _as_nobody() -> None:
    """Drop root in a child so file permissions bind (root ignores them)."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)


@pytest.fixture
def shared_dir() -> Any:
    """A folder another user (nobody) may enter: pytest's tmp_path is private to its owner."""
    d = Path(tempfile.mkdtemp(prefix="skiplab-perm-"))
    d.chmod(0o777)
    yield d
    for p in [d, *d.rglob("*")]:
        with contextlib.suppress(OSError):
            p.chmod(0o777)
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def test_run_folder_not_writable_fails_before_training(shared_dir: Path) -> None:
    locked = shared_dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)

    def child() -> None:
        _as_nobody()
        train(config(locked / "run"))

    how, code, text = in_child(child)
    assert (how, code) == ("exit", 99)
    first = text.splitlines()[0]
    assert first.startswith("OSError: cannot write to run folder") and str(locked / "run") in first, first
    assert "Permission denied" in first
    assert "in prepare_run_dir" in text and "in make_train_step" not in text  # before the first step
    assert not (locked / "run").exists()


def test_run_folder_turning_read_only_keeps_the_last_checkpoint(shared_dir: Path,
                                                                baseline: dict[str, Any]) -> None:
    run = shared_dir / "run"

    def child() -> None:
        _as_nobody()

        def lock_after_first_epoch(rec: dict[str, Any]) -> None:
            if rec["epoch"] == 1:
                (run / "checkpoints").chmod(0o555)  # no new file can be created in it
        train(config(run), on_epoch=lock_after_first_epoch)

    how, code, text = in_child(child)
    assert (how, code) == ("exit", 99)
    assert text.startswith("PermissionError") and "checkpoints" in text.splitlines()[0], text
    (run / "checkpoints").chmod(0o755)
    assert assert_nothing_half_written(run) == 4
    resume_and_compare(run, baseline)


def test_disk_full_during_a_checkpoint_write(tmp_path: Path, baseline: dict[str, Any]) -> None:
    # The disk "fills" half-way through epoch 2's checkpoint: from then on no file may grow past half a
    # checkpoint (RLIMIT_FSIZE, a real kernel write error, EFBIG; no root or special file system needed).
    from skiplab.cli import main

    run, err = tmp_path / "run", tmp_path / "stderr.txt"

    def child() -> None:
        sys.stderr = open(err, "w")  # noqa: SIM115
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write() instead of death by signal
        real, calls = ckpt_mod._atomic_write, []

        def fill_disk_on_second(path: Path, data: bytes) -> None:
            calls.append(path)
            if len(calls) == 2:
                resource.setrlimit(resource.RLIMIT_FSIZE, (len(data) // 2, resource.RLIM_INFINITY))
            real(path, data)

        ckpt_mod._atomic_write = fill_disk_on_second
        main(cli_args(run))

    how, code, text = in_child(child)
    words = " ".join(err.read_text().split())
    assert (how, code) == ("exit", 2), text + words  # a user-facing error: status 2...
    assert "error:" in words and "File too large" in words and "Traceback" not in words  # ...one clear line
    assert words.count("error:") == 1 and len(words.split("error:")[1].split()) < 40, words
    assert assert_nothing_half_written(run) == 4  # epoch 1's checkpoint is intact and still "latest"
    assert not list((run / "checkpoints").glob(".*.tmp"))  # the partial temp file was removed
    resume_and_compare(run, baseline)  # with space again, the run finishes as if nothing happened


def test_disk_full_error_names_the_checkpoint_and_the_one_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"

    def child() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        real, calls = ckpt_mod._atomic_write, []

        def fill_disk_on_second(path: Path, data: bytes) -> None:
            calls.append(path)
            if len(calls) == 2:
                resource.setrlimit(resource.RLIMIT_FSIZE, (len(data) // 2, resource.RLIM_INFINITY))
            real(path, data)

        ckpt_mod._atomic_write = fill_disk_on_second
        train(config(run))

    how, code, text = in_child(child)
    first = text.splitlines()[0]
    assert "latest.safetensors" in first and "step 4" in first and "--resume" in first, first


def test_data_folder_missing_on_resume_leaves_the_run_untouched(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for cls in ("a", "b"):
            (data / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(data / split / cls / f"{i}.png")
    run = tmp_path / "run"
    cfg = config(run, data="imagefolder", data_dir=str(data), data_options={}, val_split=0, epochs=2,
                 batch_size=8, log_every=1)
    how, sig, text = in_child(lambda: train(cfg), fault="step:3")  # killed mid-epoch 2
    assert (how, sig) == ("signal", signal.SIGKILL), text
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    data.rename(tmp_path / "moved")
    with pytest.raises(FileNotFoundError) as e:
        train(TrainConfig(resume=str(run)))
    assert str(data) in str(e.value)  # names the folder it looked in
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing rewritten or lost
    (tmp_path / "moved").rename(data)
    r = train(TrainConfig(resume=str(run)))
    assert r.status == "completed" and r.step == 4


# ------------------------------------------------------------------------------------------------ numerics
# NaN/Inf losses: tests/test_train.py::test_nan_loss_stops_with_step_cause_and_checkpoint (lr 1e4) and
# ::test_nan_from_the_model_names_the_exact_step (the exact step, between two metric reads).
def _one_step(**over: Any) -> dict[str, torch.Tensor]:
    cfg = TrainConfig(**{**SETTINGS, "epochs": None, "max_steps": 1, "momentum": 0.0, "nesterov": False,
                         "weight_decay": 0.0, "grad_clip": None, "test_split": None, "val_split": 0, **over})
    return {k: p.detach().clone() for k, p in train(cfg).model.named_parameters()}


def test_grad_clip_bounds_the_update() -> None:
    """One plain-SGD step moves the weights by lr * (clipped gradient): with grad_clip=c the step is at most
    lr * c long, without it it is the raw gradient's length."""
    start = _one_step(lr=1e-30)  # a step too small to change a float32 weight: the initial weights

    def step_length(**over: Any) -> float:
        w = _one_step(lr=1.0, **over)
        return float(torch.sqrt(sum(((w[k] - start[k]).double() ** 2).sum() for k in w)))

    raw = step_length()
    clipped = step_length(grad_clip=1e-3)
    assert raw > 0.01
    assert 0.9e-3 < clipped <= 1e-3 * (1 + 1e-4), clipped


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    a = _one_step(max_steps=3, seed=11)
    b = _one_step(max_steps=3, seed=11)
    c = _one_step(max_steps=3, seed=12)
    assert_bitwise(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)
