"""`torchrun --nproc_per_node=2 -m skiplab train` (gloo on CPU) matches single-process training.

With the same global batch, each of the 2 processes takes every other sample of each global batch (and the
loader gives each row the augmentation draw the 1-process run gives it), DDP averages the two half-batch
gradients, which is the full-batch mean gradient up to float summation order.  The model has no BatchNorm:
BN normalises with per-rank batch statistics (16 images instead of 32), a different function, so a BN net
would not match unless its layers were SyncBatchNorm (``--sync-bn``, which needs CUDA).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from skiplab.train import TrainConfig, load_checkpoint, train

DATA = {"n_train": 160, "n_test": 48, "image_size": 8}
SETTINGS = dict(model="resnet20", model_kwargs={"width": 0.25, "norm": "none"}, data="synthetic", data_options=DATA,
                epochs=2, batch_size=32, eval_batch_size=16, lr=0.02, num_threads=1, log_every=5, seed=1)


def test_two_process_ddp_matches_single_process(tmp_path):
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "skiplab", "train", "--out", str(run),
           "--progress", "none", "--model", SETTINGS["model"], "--model-kwargs", json.dumps(SETTINGS["model_kwargs"]),
           "--data", "synthetic", "--data-options", json.dumps(DATA), "--epochs", "2", "--batch-size", "32",
           "--eval-batch-size", "16", "--lr", "0.02", "--num-threads", "1", "--log-every", "5", "--seed", "1"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SKIPLAB_FAULT")}
    p = subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    assert p.stdout.count("done: 2 epochs, 10 steps") == 1  # only rank 0 reports

    single = train(TrainConfig(**SETTINGS))
    ck = load_checkpoint(run)
    assert ck.meta["step"] == 10
    man = json.loads((run / "manifest.json").read_text())
    assert man["world_size"] == 2
    for k, v in single.model.state_dict().items():  # equal up to float summation order
        d = ck.model_state[k]
        assert torch.allclose(d, v, rtol=1e-4, atol=1e-5), (k, (d - v).abs().max())
    hist = json.loads((run / "result.json").read_text())["history"]
    for h, s in zip(hist, single.history):  # train loss/acc are all-reduced over both ranks
        assert abs(h["train_loss"] - s["train_loss"]) < 1e-4 and abs(h["train_acc"] - s["train_acc"]) < 1e-9
        assert abs(h["test_loss"] - s["test_loss"]) < 1e-4


CALLER_GROUP_SCRIPT = """
import os, torch, torch.distributed as dist
from skiplab.train import TrainConfig, train


def gloo_threads():
    tasks = "/proc/self/task"
    return [n for t in os.listdir(tasks) if "gloo" in (n := open(f"{tasks}/{t}/comm").read().strip())]


dist.init_process_group("gloo")
# batch-mode stochastic depth: a dropped block's parameters sit out a step (DDP must allow unused parameters)
r = train(TrainConfig(model="resnet20", model_kwargs={"width": 0.25, "norm": "none", "drop_path_rate": 0.5,
                                                      "drop_path_mode": "batch"}, data="synthetic",
                      data_options={"n_train": 128, "n_test": 16, "image_size": 8}, epochs=2, batch_size=32,
                      num_threads=1, progress="none"))
assert dist.is_initialized(), "train() destroyed the caller's process group"
t = torch.ones(1)
dist.all_reduce(t)
assert t.item() == 2.0 and r.status == "completed"
dist.destroy_process_group()
# the group is really gone: nothing (DDP inside train() included) kept it alive, so its worker threads were
# joined here instead of still running at interpreter shutdown, where they abort the process now and then
assert gloo_threads() == [], gloo_threads()
print("caller group intact")
"""


def test_train_leaves_a_process_group_it_did_not_create(tmp_path):
    """An experiment that set up its own group (and trains DDP inside it) keeps the group after train()."""
    script = tmp_path / "caller.py"
    script.write_text(CALLER_GROUP_SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SKIPLAB_FAULT")}
    p = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script)],
                       env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    assert p.stdout.count("caller group intact") == 2
