"""`skiplab train` / `skiplab eval` end to end, and fault survival: a training process killed with SIGKILL at
several moments (mid-epoch, during evaluation, half-way through a checkpoint write, just after one) or stopped
with SIGINT resumes to weights bitwise equal to an uninterrupted run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from skiplab.cli import main
from skiplab.train import TrainConfig, load_checkpoint, train
from skiplab.train import faults

DATA = {"n_train": 160, "n_test": 48, "image_size": 8}  # 5 steps per epoch at batch 32
SETTINGS = dict(model="resnet20", model_kwargs={"width": 0.25}, data="synthetic", data_options=DATA, epochs=3,
                batch_size=32, eval_batch_size=16, lr=0.05, nesterov=True, num_threads=1, log_every=2, seed=3)


def cli_args(out: Path, **over) -> list[str]:
    s = {**SETTINGS, **over}
    args = ["train", "--out", str(out), "--progress", "lines"]
    for k, v in s.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, dict):
            args += [flag, json.dumps(v)]
        else:
            args += [flag, str(v)]
    return args


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The uninterrupted run's final weights (in-process, same settings as the CLI runs)."""
    faults.reset()
    r = train(TrainConfig(**SETTINGS, out=str(tmp_path_factory.mktemp("base") / "run"), progress="none"))
    return {k: v.clone() for k, v in r.model.state_dict().items()}


def run_cli(args: list[str], fault: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    return subprocess.run([sys.executable, "-m", "skiplab", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_train_then_eval(tmp_path, capsys, baseline):
    run = tmp_path / "run"
    main(cli_args(run))
    out = capsys.readouterr()
    assert "done: 3 epochs, 15 steps" in out.out and "test acc" in out.out and str(run) in out.out
    assert "epoch   3" in out.err  # the per-epoch lines
    ck = load_checkpoint(run)
    for k, v in baseline.items():  # the CLI builds the same config as the Python API
        assert torch.equal(ck.model_state[k], v), k
    final = json.loads((run / "result.json").read_text())["final"]

    main(["eval", "--run", str(run)])
    line = capsys.readouterr().out
    assert f"accuracy {100 * final['test_acc']:.2f}%" in line and "synthetic/test (48 images)" in line
    main(["eval", "--weights", str(run / "model.safetensors"), "--data", "synthetic", "--split", "train",
          "--data-options", json.dumps(DATA)])
    assert "synthetic/train (160 images)" in capsys.readouterr().out  # model name + kwargs come from the file
    main(["eval", "--run", str(run), "--tta", "flip"])
    assert "(test-time augmentation: flip)" in capsys.readouterr().out
    assert "tta must be one of 'none', 'flip'; got 'rot'" in user_error(["eval", "--run", str(run), "--tta", "rot"],
                                                                        capsys)


def user_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())  # rich wraps long lines


def test_cli_user_errors_exit_2_without_traceback(tmp_path, capsys):
    assert "lr must be > 0; got -1.0" in user_error(cli_args(tmp_path / "a", lr=-1), capsys)
    assert "schedule must be one of" in user_error(cli_args(tmp_path / "a", schedule="cosin"), capsys)
    assert "--out is required" in user_error(["train", "--model", "resnet20"], capsys)
    assert "--model-kwargs must be a JSON object" in user_error(
        ["train", "--out", str(tmp_path / "b"), "--model-kwargs", "width=2"], capsys)
    assert "--milestones must be comma-separated" in user_error(
        ["train", "--out", str(tmp_path / "b"), "--milestones", "a,b"], capsys)
    assert "unknown model 'resnet21'" in user_error(cli_args(tmp_path / "c", model="resnet21"), capsys)
    assert "no checkpoint at" in user_error(["train", "--resume", str(tmp_path / "nothing")], capsys)
    assert "drop --lr" in user_error(["train", "--resume", str(tmp_path / "x"), "--lr", "0.1"], capsys)
    assert "either --run" in user_error(["eval"], capsys)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    assert "already exists; pass --overwrite" in user_error(cli_args(tmp_path / "d"), capsys)


# Each moment costs a fresh process (~5-15 s on the shared 2-core machine): two run by default, all with -m slow.
KILL_MOMENTS = [
    "step:8",  # mid-epoch 2
    "ckpt_write:2",  # half-way through writing epoch 2's checkpoint: epoch 1's must survive
    pytest.param("eval:5", marks=pytest.mark.slow),  # during epoch 2's evaluation (3 batches of 16 per evaluation)
    pytest.param("ckpt_done:1", marks=pytest.mark.slow),  # right after epoch 1's checkpoint is renamed into place
    pytest.param("step:13", marks=pytest.mark.slow),  # mid-epoch 3
]


@pytest.mark.parametrize("moment", KILL_MOMENTS)
def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path, baseline, moment):
    run = tmp_path / "run"
    p = run_cli(cli_args(run), fault=moment)
    assert p.returncode == -9, p.stderr[-2000:]
    ck = load_checkpoint(run)  # "latest" is always readable, whatever moment the kill hit
    assert ck.meta["step"] in (5, 10)
    if moment == "ckpt_write:2":
        assert ck.meta["step"] == 5 and list((run / "checkpoints").glob(".*.tmp"))  # the half-written temp
    faults.reset()
    r = train(TrainConfig(resume=str(run)))
    assert r.status == "completed" and r.step == 15
    assert not list((run / "checkpoints").glob(".*.tmp"))
    for k, v in baseline.items():
        assert torch.equal(r.model.state_dict()[k], v), k
    # the log reads as if the run never stopped: step records every 2 steps (and at the end), epoch records
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"][0], r["step"]) for r in recs] == [("s", 2), ("s", 4), ("e", 5), ("s", 6), ("s", 8), (
        "s", 10), ("e", 10), ("s", 12), ("s", 14), ("s", 15), ("e", 15)]


def test_sigint_stops_cleanly_with_resume_command(tmp_path, baseline, capsys, monkeypatch):
    # In-process: the fault hook sends SIGINT to this process after step 7; train's handler takes it.
    run = tmp_path / "run"
    monkeypatch.setenv(faults.ENV, "step:7:INT")
    faults.reset()
    with pytest.raises(SystemExit) as e:
        main(cli_args(run))
    assert e.value.code == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "SIGINT received: stopping after this step" in err and "stopped by SIGINT at step 7/15" in err
    assert f"Resume with: skiplab train --resume {run}" in err
    assert load_checkpoint(run).meta["step"] == 7
    monkeypatch.delenv(faults.ENV)
    main(["train", "--resume", str(run), "--progress", "lines"])
    assert "done: 3 epochs, 15 steps" in capsys.readouterr().out
    final = load_checkpoint(run).model_state
    for k, v in baseline.items():
        assert torch.equal(final[k], v), k
