"""skiplab.train in-process: config validation, schedules, checkpoints (atomic, verified), exact resume, NaN stop,
run-folder safety.  Tiny runs: a quarter-width ResNet-20 on 8x8 synthetic images, a few steps each."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skiplab.train import (CheckpointError, Schedule, TrainConfig, TrainingDiverged, evaluate, load_checkpoint,
                           load_model_state, train)
from skiplab.train import checkpoint as ckpt_mod
from skiplab.train import faults
from skiplab.train.metrics import TIMING_FIELDS

DATA = dict(n_train=160, n_test=48, image_size=8)
MODEL = dict(width=0.25)


def tiny(**kw) -> TrainConfig:
    """5 steps per epoch (160 / 32), BN model, augmentation on, one thread (bitwise repeatable)."""
    base = dict(model="resnet20", model_kwargs=MODEL, data="synthetic", data_options=DATA, epochs=2, batch_size=32,
                eval_batch_size=64, num_threads=1, log_every=2, lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(autouse=True)
def _no_faults(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset()
    yield
    faults.reset()


# --------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("kw, words", [
    (dict(lr=-0.1), ["lr", "> 0", "-0.1"]),
    (dict(lr=0), ["lr", "> 0"]),
    (dict(lr=float("nan")), ["lr", "finite number", "nan"]),
    (dict(lr=float("inf")), ["lr", "finite number", "inf"]),
    (dict(lr="0.1"), ["lr", "a number", "'0.1'"]),
    (dict(epochs=0), ["epochs", ">= 1", "0"]),
    (dict(epochs=2.5), ["epochs", "integer", "2.5"]),
    (dict(epochs=None), ["epochs", "max_steps"]),
    (dict(epochs=3, max_steps=10), ["either epochs or max_steps", "3", "10"]),
    (dict(batch_size=0), ["batch_size", ">= 1", "0"]),
    (dict(batch_size=-4), ["batch_size", "-4"]),
    (dict(schedule="cosin"), ["schedule", "'cosine'", "'cosin'"]),
    (dict(optimizer="adam"), ["optimizer", "'sgd'", "'adamw'", "'adam'"]),
    (dict(amp="fp8"), ["amp", "'bf16'", "'fp8'"]),
    (dict(device="tpu"), ["device", "'cuda'", "'tpu'"]),
    (dict(momentum=1.5), ["momentum", "<= 1", "1.5"]),
    (dict(weight_decay=-1e-4), ["weight_decay", ">= 0"]),
    (dict(label_smoothing=1.0), ["label_smoothing", "0.999"]),
    (dict(schedule="step"), ["milestones", "step"]),
    (dict(schedule="step", milestones=(20, 10)), ["milestones", "increasing"]),
    (dict(schedule="onecycle", warmup=0), ["warmup", "onecycle"]),
    (dict(warmup=-1), ["warmup", ">= 0"]),
    (dict(grad_clip=0), ["grad_clip", "> 0"]),
    (dict(optimizer="adamw", nesterov=True), ["nesterov", "sgd"]),
    (dict(val_split=-5), ["val_split", ">= 0"]),
    (dict(seed=-1), ["seed", ">= 0"]),
    (dict(model_kwargs=[1]), ["model_kwargs", "dict"]),
    (dict(out=""), ["out", "path"]),
    (dict(progress="fancy"), ["progress", "'bar'"]),
    (dict(eval_every=-1), ["eval_every", ">= 0"]),
    (dict(nesterov="yes"), ["nesterov", "True or False", "'yes'"]),
    (dict(betas=(0.9, 1.5)), ["betas", "[0, 1)", "1.5"]),
])
def test_config_validation_names_field_expected_and_given(kw, words):
    with pytest.raises(ValueError) as e:
        TrainConfig(**kw)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


_ANY = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                st.text(max_size=6), st.lists(st.integers(-2, 5), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                             st.integers(), max_size=2))
_FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_FIELDS), _ANY, max_size=4))
def test_any_config_is_valid_or_a_clean_value_error(kw):
    try:
        cfg = TrainConfig(**kw)
    except ValueError as e:
        assert str(e) and any(name in str(e) for name in _FIELDS + ["epochs or max_steps"]), str(e)
    else:
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_recipes():
    he = TrainConfig.from_recipe("he2015")
    assert (he.batch_size, he.lr, he.momentum, he.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert (he.schedule, he.schedule_unit, he.milestones, he.max_steps, he.epochs) == \
        ("step", "steps", (32000, 48000), 64000, None)
    assert he.crop_padding == 4 and he.flip and he.recipe == "he2015"
    short = TrainConfig.from_recipe("he2015", epochs=3, val_split=5000)
    assert (short.epochs, short.max_steps, short.val_split, short.lr) == (3, None, 5000, 0.1)
    fast = TrainConfig.from_recipe("fast", lr=0.1)
    assert fast.nesterov and fast.schedule == "onecycle" and fast.lr == 0.1 and fast.label_smoothing > 0
    with pytest.raises(ValueError, match="recipe must be one of .*'he2015'.*got 'he2016'"):
        TrainConfig.from_recipe("he2016")
    with pytest.raises(ValueError, match="unknown TrainConfig field.*learning_rate"):
        TrainConfig.from_recipe("fast", learning_rate=0.1)
    assert TrainConfig.from_dict(fast.to_dict()) == fast


def test_schedules():
    cfg = TrainConfig.from_recipe("he2015")
    s = Schedule.from_config(cfg, 64000, 391)
    assert [s.factor(i) for i in (0, 31999, 32000, 47999, 48000, 63999)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    c = Schedule.from_config(TrainConfig(schedule="cosine", warmup=1, epochs=10), 100, 10)
    assert c.factor(0) == pytest.approx(0.1) and c.factor(9) == pytest.approx(1.0)
    assert c.factor(10) == pytest.approx(1.0) and c.factor(55) == pytest.approx(0.5) and c.factor(100) == 0
    o = Schedule.from_config(TrainConfig(schedule="onecycle", warmup=2, epochs=10), 100, 10)
    assert o.factor(0) == pytest.approx(0.04) and o.factor(20) == pytest.approx(1.0)
    assert o.factor(60) == pytest.approx(0.5) and o.factor(100) == 0
    m = Schedule.from_config(TrainConfig(schedule="step", milestones=(2, 4), epochs=5), 50, 10)
    assert (m.factor(19), m.factor(20), m.factor(40)) == pytest.approx((1, 0.1, 0.01))
    with pytest.raises(ValueError, match="warmup"):
        Schedule.from_config(TrainConfig(schedule="onecycle", warmup=20, epochs=10), 100, 10)


# --------------------------------------------------------------------------------------------- training
def test_in_memory_run_writes_nothing_and_reports_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    r = train(tiny(val_split=32, optimizer="adamw", lr=3e-3, weight_decay=0.05, wd_exclude_bn_bias=True),
              on_epoch=seen.append)
    assert list(tmp_path.iterdir()) == [] and r.run_dir is None and r.status == "completed"
    assert seen == r.history
    assert [h["epoch"] for h in r.history] == [1, 2] and r.step == 8  # 128 train images / 32
    for h in r.history:
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "images_per_s"):
            assert h[k] is not None and math.isfinite(h[k]), k
    assert r.final["test_acc"] == r.history[-1]["test_acc"]
    from skiplab.data import BatchLoader, load_dataset

    loader = BatchLoader(load_dataset("synthetic", "test", **DATA), 16, shuffle=False)
    loss, acc = evaluate(r.model, loader)
    assert loss == pytest.approx(r.final["test_loss"], rel=1e-5) and acc == pytest.approx(r.final["test_acc"])
    assert r.model.training  # evaluate restores the mode


def test_run_folder_contents(tmp_path):
    run = tmp_path / "run"
    r = train(tiny(out=str(run), progress="bar", keep_epoch_checkpoints=True))  # rich bar, to a non-terminal
    names = {p.name for p in run.iterdir()}
    assert {"manifest.json", "metrics.jsonl", "metrics.csv", "checkpoints", "model.safetensors",
            "result.json"} <= names
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_0001.safetensors", "epoch_0002.safetensors", "latest.safetensors"]
    assert load_checkpoint(run / "checkpoints" / "epoch_0001.safetensors").meta["step"] == 5
    man = json.loads((run / "manifest.json").read_text())
    assert man["model"] == {"name": "resnet20", "kwargs": {**MODEL, "num_classes": 10}}
    assert man["config"]["lr"] == 0.05 and man["seeds"] == [0] and man["device"] == "cpu"
    assert man["versions"]["torch"] == torch.__version__ and man["wall_time_s"] > 0
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["kind"] == "step"] == [2, 4, 6, 8, 10]
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [1, 2]
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("kind,epoch,step,lr") and len(csv_lines) == 1 + len(recs)
    assert "data_time_s,eval_time_s" in csv_lines[0]
    for rec in (x for x in recs if x["kind"] == "epoch"):  # where an epoch's time went
        assert 0 <= rec["data_time_s"] < rec["epoch_time_s"] and rec["eval_time_s"] > 0
    from skiplab.weights import load_weights

    from skiplab.registry import create_model
    m = create_model("resnet20", **MODEL)
    load_weights(m, run / "model.safetensors")
    assert_bitwise_equal(m.state_dict(), r.model.state_dict())


@pytest.mark.parametrize("stop_at, kw", [
    (3, dict()),  # mid-epoch (192 / 32 = 6 steps per epoch), SGD + BN + augmentation
    (6, dict(optimizer="adamw", lr=3e-3, label_smoothing=0.1)),  # the epoch's last step: stops after its eval
    (8, dict(nesterov=True, schedule="onecycle", warmup=1, grad_clip=1.0, val_split=32, cutout=4)),
])
def test_signal_stop_then_resume_is_bitwise_identical(tmp_path, monkeypatch, stop_at, kw):
    full = train(tiny(epochs=3, out=str(tmp_path / "full"), progress="none", data_options={**DATA, "n_train": 192},
                      **kw))
    assert full.step == (15 if "val_split" in kw else 18)
    monkeypatch.setenv(faults.ENV, f"step:{stop_at}:TERM")  # SIGTERM to ourselves after that step
    faults.reset()
    part = train(tiny(epochs=3, out=str(tmp_path / "part"), progress="none", data_options={**DATA, "n_train": 192},
                      **kw))
    monkeypatch.delenv(faults.ENV)
    assert part.status == "interrupted" and part.signal == "SIGTERM"
    assert part.step == stop_at  # stops right after the signalled step
    ck = load_checkpoint(tmp_path / "part")
    assert ck.meta["step"] == stop_at
    resumed = train(TrainConfig(resume=str(tmp_path / "part")))
    assert resumed.status == "completed" and resumed.step == full.step
    assert_bitwise_equal(full.model.state_dict(), resumed.model.state_dict())
    assert_bitwise_equal(weights_of(tmp_path / "full"), weights_of(tmp_path / "part"))

    def clean(recs):  # timing fields are wall-clock; everything else must match
        return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in recs]

    assert clean(resumed.history) == clean(full.history)
    lines = lambda run: [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]  # noqa
    assert clean(lines("part")) == clean(lines("full"))
    man = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert man["resumed_at_steps"] == [stop_at]


def test_nan_loss_stops_with_step_cause_and_checkpoint(tmp_path):
    cfg = tiny(epochs=6, lr=1e4, momentum=0.0, weight_decay=0.0, model_kwargs={**MODEL, "norm": "none"},
               out=str(tmp_path / "run"), progress="none", log_every=1)
    with pytest.raises(TrainingDiverged) as e:
        train(cfg)
    msg = str(e.value)
    assert "NaN/Inf at step" in msg and "learning rate" in msg and "--grad-clip" in msg
    step = int(msg.split("at step ")[1].split()[0])
    assert step >= 1
    if step > 5:  # diverged after the first epoch end: the message names that checkpoint
        assert str(tmp_path / "run" / "checkpoints" / "latest.safetensors") in msg
    else:
        assert "no checkpoint was written before it" in msg.lower()
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["kind"] == "error" and recs[-1]["step"] == step


def test_nan_from_the_model_names_the_exact_step(tmp_path, monkeypatch):
    # Poison the 7th forward pass: the loop reads the loss only every log_every=4 steps, yet names step 7.
    import torch.nn as nn

    calls = {"n": 0}

    def poison(module: nn.Module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 7 else output

    from skiplab import registry

    real = registry.create_model

    def create(name, **kw):
        m = real(name, **kw)
        m.register_forward_hook(poison)
        return m

    monkeypatch.setattr(registry, "create_model", create)
    with pytest.raises(TrainingDiverged, match=r"at step 7 \(epoch 2\).*last good checkpoint is .*latest"):
        train(tiny(out=str(tmp_path / "run"), progress="none", log_every=4, test_split=None))


# --------------------------------------------------------------------------------------------- run folders
def test_existing_run_folder_is_refused_unless_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"already exists.*--overwrite.*--resume"):
        train(tiny(out=str(run)))
    with pytest.raises(FileExistsError, match="does not look like a skiplab run folder"):
        train(tiny(out=str(run), overwrite=True))
    assert (run / "notes.txt").read_text() == "mine"
    (run / "notes.txt").unlink()
    train(tiny(out=str(run), epochs=1, progress="none"))  # an empty folder is fine
    with pytest.raises(FileExistsError, match="already exists"):
        train(tiny(out=str(run), epochs=1))
    r = train(tiny(out=str(run), epochs=1, overwrite=True, progress="none", seed=1))
    assert r.status == "completed" and load_checkpoint(run).meta["config"]["seed"] == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        train(tiny(out=str(blocker)))
    with pytest.raises(OSError, match="cannot write to run folder .*file/run"):  # not writable
        train(tiny(out=str(blocker / "run")))


def test_bad_inputs_fail_before_creating_the_run_folder(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="cifar"):
        train(tiny(data="cifar10", data_options={}, data_dir=str(tmp_path / "no-such-folder"), out=str(run)))
    with pytest.raises(ValueError, match="unknown model 'resnet21'"):
        train(tiny(model="resnet21", out=str(run)))
    with pytest.raises(ValueError, match=r"num_classes=5 is too small.*labels 0\.\.9"):
        train(tiny(model_kwargs={**MODEL, "num_classes": 5}, out=str(run)))
    with pytest.raises(ValueError, match="val_split must be smaller than the training split \\(160 images\\); got 160"):
        train(tiny(val_split=160, out=str(run)))
    with pytest.raises(ValueError, match="depth|width"):
        train(tiny(model_kwargs={"width": -1}, out=str(run)))
    assert not run.exists()


# --------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ck") / "run"
    train(tiny(epochs=1, out=str(run), progress="none", test_split=None))
    return run


def test_checkpoint_contents(one_run):
    ck = load_checkpoint(one_run)
    assert ck.model_name == "resnet20" and ck.model_kwargs == {**MODEL, "num_classes": 10}
    assert ck.meta["step"] == 5 and ck.meta["epoch"] == 1 and ck.meta["config"]["epochs"] == 1
    assert set(ck.state) >= {"optimizer", "rng", "loader", "history", "acc", "epoch_step"}
    assert set(ck.state["rng"]) >= {"torch", "numpy", "python"}
    assert ck.state["loader"]["epoch"] == 1 and ck.state["loader"]["batch"] == 0


def _copy(src: Path, dst: Path, mutate) -> Path:
    data = bytearray(src.read_bytes())
    dst.write_bytes(bytes(mutate(data)))
    return dst


def test_corrupt_checkpoints_are_detected(one_run, tmp_path):
    src = one_run / "checkpoints" / "latest.safetensors"
    n = src.stat().st_size

    def flip(i):
        def f(d):
            d[i] ^= 0x10
            return d
        return f

    cases = {
        "truncated": (lambda d: d[: n // 2], "truncated"),
        "tail_cut": (lambda d: d[:-3], "truncated or corrupt"),
        "flip_data": (flip(n - 100), "failed its checksum"),
        "flip_data2": (flip(n // 2 + 1000), "failed its checksum"),
        "empty": (lambda d: b"", "truncated"),
    }
    for name, (mutate, words) in cases.items():
        p = _copy(src, tmp_path / f"{name}.safetensors", mutate)
        with pytest.raises(CheckpointError, match=words):
            load_checkpoint(p)
    # a bit flip inside the JSON metadata: either the JSON breaks or the checksum catches it
    header_len = int.from_bytes(src.read_bytes()[:8], "little")
    p = _copy(src, tmp_path / "meta.safetensors", flip(8 + header_len // 2))
    with pytest.raises(CheckpointError, match="corrupt|checksum|not a skiplab"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from skiplab.registry import create_model
    from skiplab.weights import save_weights

    w = save_weights(create_model("resnet20", **MODEL), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="not a skiplab training checkpoint"):
        load_checkpoint(w)


def test_checkpoint_of_another_model_or_shape_is_refused(one_run):
    from skiplab.registry import create_model

    ck = load_checkpoint(one_run)
    with pytest.raises(CheckpointError, match="of model 'resnet20', not 'resnet32'"):
        load_model_state(create_model("resnet32", width=0.25), ck)
    with pytest.raises(CheckpointError, match=r"of resnet20\(.*\), not resnet20\(.*'width': 0.5"):
        load_model_state(create_model("resnet20", width=0.5), ck)
    other = create_model("resnet20", width=0.5)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_model_state(other, ck, model_name="resnet20", model_kwargs=ck.model_kwargs)


def test_crash_during_checkpoint_write_keeps_the_old_latest(one_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(one_run, run)
    latest = run / "checkpoints" / "latest.safetensors"
    before = latest.read_bytes()

    def crash(name):
        if name == "ckpt_write":
            raise OSError(28, "No space left on device")  # the disk fills half-way through the write

    monkeypatch.setattr(ckpt_mod, "fault_point", crash)
    model = load_checkpoint(latest)
    from skiplab.registry import create_model

    m = create_model("resnet20", **MODEL)
    with pytest.raises(OSError, match="No space left"):
        ckpt_mod.save_checkpoint(latest, m, model_name="resnet20", model_kwargs=MODEL, step=99, epoch=9,
                                 config={}, state={"x": torch.ones(3)})
    assert latest.read_bytes() == before and load_checkpoint(latest).meta["step"] == model.meta["step"]
    assert not list(latest.parent.glob(".*.tmp"))  # the partial temp file was removed


def test_a_failed_checkpoint_write_names_the_file_and_the_checkpoint_kept(tmp_path, monkeypatch):
    calls = []

    def disk_full_on_second_write(name):
        if name == "ckpt_write":
            calls.append(name)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod, "fault_point", disk_full_on_second_write)
    run = tmp_path / "run"
    with pytest.raises(OSError) as e:
        train(tiny(out=str(run), progress="none", test_split=None))
    msg = str(e.value)
    assert e.value.errno == 28 and "No space left on device while writing checkpoint" in msg
    assert f"last good checkpoint {run / 'checkpoints' / 'latest.safetensors'} (step 5) is intact" in msg
    assert f"resume with: skiplab train --resume {run}" in msg
    assert load_checkpoint(run).meta["step"] == 5 and not list((run / "checkpoints").glob(".*.tmp"))


def test_too_little_disk_space_is_refused_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(OSError, match=r"not enough free disk space .* 0 MiB free, about \d+ MiB needed"):
        train(tiny(out=str(tmp_path / "run")))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_without_a_checkpoint_and_non_checkpoint_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")  # a run killed before its first epoch ended
    with pytest.raises(CheckpointError, match="no checkpoint at .*stopped before its first epoch.*--overwrite"):
        train(TrainConfig(resume=str(run)))
    from skiplab.registry import create_model

    pth = tmp_path / "model.pth"
    torch.save(create_model("resnet20", **MODEL).state_dict(), pth)
    with pytest.raises(CheckpointError, match="not a skiplab training checkpoint: it is a zip archive"):
        load_checkpoint(pth)


def test_train_takes_a_builder_for_an_unregistered_net():
    """A net the registry has no name for trains through ``builder``; classes and channels come from the data."""
    from skiplab.models.preact import preact_resnet

    seen = {}

    def builder(**kw):
        seen.update(kw)
        return preact_resnet(**kw)

    with pytest.warns(RuntimeWarning, match="channels_last off: layer 'stages.1.0.shortcut.conv'"):  # 4 channels
        r = train(tiny(model="preact_resnet8_basic", model_kwargs={"depth": 8, "unit": "basic", "width": 0.25},
                       data="synthetic_digits", data_options={"n_train": 64, "n_test": 32, "image_size": 12}, epochs=1),
                  builder=builder)
    assert r.status == "completed" and r.step == 2
    assert seen == {"depth": 8, "unit": "basic", "width": 0.25, "num_classes": 10, "in_channels": 1} == r.model_kwargs
    assert math.isfinite(r.final["test_loss"])


def test_flip_tta_averages_the_logits_of_the_image_and_its_mirror():
    from skiplab.train import evaluate

    class Asym(torch.nn.Module):  # logit 0 = mean of the left half, logit 1 = mean of the right half
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # evaluate() reads the device from a parameter

        def forward(self, x):
            w = x.shape[-1] // 2
            return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1)

    x = torch.zeros(2, 1, 2, 4)
    x[0, ..., :2] = 1.0  # bright left: class 0
    x[1, ..., 2:] = 3.0  # bright right: class 1
    y = torch.tensor([0, 1])
    model = Asym()
    plain_loss, plain_acc = evaluate(model, [(x, y)])
    tta_loss, tta_acc = evaluate(model, [(x, y)], tta="flip")
    assert plain_acc == 1.0 and tta_acc == 0.5  # mirrored logits cancel: both rows tie, argmax picks class 0
    assert tta_loss == pytest.approx(math.log(2))


def test_checkpoint_segments_train_the_same_weights():
    """Gradient checkpointing changes memory, not the result: same weights as the plain run."""
    plain = train(tiny(epochs=1))
    ck = train(tiny(epochs=1, checkpoint_segments=2))
    for k, v in plain.model.state_dict().items():
        assert torch.allclose(v, ck.model.state_dict()[k], rtol=1e-5, atol=1e-6), k
    assert ck.model.checkpoint_segments == 2
    with pytest.raises(ValueError, match="checkpoint_segments must be >= 1"):
        TrainConfig(model="resnet20", checkpoint_segments=0)
