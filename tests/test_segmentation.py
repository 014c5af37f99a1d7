"""Segmentation (issue 17): metrics on hand-made masks with known IoU and boundary F1, the losses, training and
evaluation wiring (run folder, CLI, DDP), exact resume, bad-input errors, the stroke datasets, additive long skips
and long-skip lesions, the README example, and the ``unet_skips`` experiment at a tiny setting."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import skiplab
from skiplab.data import ImageDataset, NonOfficialDataWarning, load_dataset
from skiplab.data.strokes import stroke_width
from skiplab.train import TrainConfig, load_checkpoint, train
from skiplab.train import faults
from skiplab.train.metrics import TIMING_FIELDS
from skiplab.train.segmentation import (IGNORE_INDEX, boundary_pixels, check_masks, dice_loss, evaluate_segmentation,
                                        segmentation_loss, segmentation_metrics)

ROOT = Path(__file__).resolve().parents[1]
SEG_DATA = dict(n_train=48, n_test=16, image_size=16)
UNET = dict(depth=2, base_width=4)


def tiny(**kw) -> TrainConfig:
    """A depth-2 width-4 U-Net on 16x16 synthetic_seg: 3 steps per epoch (48 / 16), one thread."""
    base = dict(model="unet", model_kwargs=UNET, data="synthetic_seg", data_options=SEG_DATA, epochs=2, batch_size=16,
                eval_batch_size=16, num_threads=1, log_every=2, lr=0.05, progress="none")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(autouse=True)
def _no_faults(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset()
    yield
    faults.reset()


def square(top: int, left: int, size: int = 4, hw: int = 8) -> torch.Tensor:
    m = torch.zeros(1, hw, hw, dtype=torch.int64)
    m[0, top:top + size, left:left + size] = 1
    return m


# ------------------------------------------------------------------------------------------------ metrics by hand
def test_metrics_of_a_square_shifted_by_one_pixel() -> None:
    """Target: a 4x4 square in an 8x8 image; prediction: the same square one pixel to the right.
    Square: 12 of 20 pixels shared -> IoU 0.6; background: 44 of 52 -> 11/13; 8 of 64 pixels wrong.
    Boundaries: the square's inner ring (12 pixels) and the background's outer ring (16, 4-neighbours only).
    Exact pixels (0 px): the rings share 6 of 12 square pixels and 6 of 16 background pixels -> F1 0.5 and 0.375.
    Within 1 px every boundary pixel has a partner -> F1 1."""
    target, pred = square(2, 2), square(2, 3)
    m0 = segmentation_metrics(pred, target, 2, tolerance=0)
    assert m0["acc"] == pytest.approx(56 / 64)
    assert m0["iou"] == pytest.approx([44 / 52, 12 / 20]) and m0["miou"] == pytest.approx((44 / 52 + 0.6) / 2)
    assert m0["boundary_f1_per_class"] == pytest.approx([0.375, 0.5])
    assert m0["boundary_f1"] == pytest.approx(0.4375)
    m1 = segmentation_metrics(pred, target, 2, tolerance=1)
    assert m1["boundary_f1"] == pytest.approx(1.0) and m1["miou"] == m0["miou"] and m1["tolerance"] == 1


def test_boundary_f1_of_a_two_pixel_shift_and_tolerance() -> None:
    """In a 10x10 image, shifted by two: the four predicted right-edge pixels (column 7) are 2 px from the target's
    nearest boundary and the four target left-edge pixels (column 2) 2 px from the prediction's: 8 of 12 matched
    each way at 1 px.  (In an 8x8 image column 7 would be the image border, which is no boundary: 8 of 10.)"""
    target, pred = square(2, 2, hw=10), square(2, 4, hw=10)
    m = segmentation_metrics(pred, target, 2, tolerance=1)
    assert m["boundary_f1_per_class"][1] == pytest.approx(8 / 12)
    assert segmentation_metrics(pred, target, 2, tolerance=2)["boundary_f1_per_class"][1] == pytest.approx(1.0)
    at_border = segmentation_metrics(square(2, 4), square(2, 2), 2, tolerance=1)["boundary_f1_per_class"][1]
    assert at_border == pytest.approx(2 * 0.8 * (8 / 12) / (0.8 + 8 / 12))
    perfect = segmentation_metrics(target, target, 2, tolerance=0)
    assert perfect["miou"] == perfect["acc"] == perfect["boundary_f1"] == 1.0


def test_boundaries_ignore_the_image_border_and_unlabelled_pixels() -> None:
    labels = torch.zeros(1, 5, 5, dtype=torch.int64)
    labels[0, :, 3:] = 1  # a vertical edge between columns 2 and 3
    edge = boundary_pixels(labels, torch.ones(1, 5, 5, dtype=torch.bool))
    assert edge[0].nonzero()[:, 1].unique().tolist() == [2, 3]  # the image border is no boundary
    valid = torch.ones(1, 5, 5, dtype=torch.bool)
    valid[0, :, 3] = False  # unlabelled column: no edge against it
    assert not boundary_pixels(labels, valid).any()
    # unlabelled target pixels count nowhere: a wrong prediction there changes nothing
    target = square(2, 2)
    target[0, 0, :] = IGNORE_INDEX
    pred = target.clamp_min(0).clone()
    pred[0, 0, :] = 1
    assert segmentation_metrics(pred, target, 2)["acc"] == 1.0
    # a class absent from target and prediction does not enter the means
    m = segmentation_metrics(square(2, 2), square(2, 2), 3)
    assert m["iou"][2] is None and m["boundary_f1_per_class"][2] is None and m["miou"] == 1.0


# ------------------------------------------------------------------------------------------------------- losses
def test_losses() -> None:
    torch.manual_seed(0)
    logits, masks = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
    assert segmentation_loss(logits, masks) == pytest.approx(float(F.cross_entropy(logits, masks)))
    both = segmentation_loss(logits, masks, loss="ce+dice")
    assert both == pytest.approx(float(F.cross_entropy(logits, masks) + dice_loss(logits, masks)))
    confident = F.one_hot(masks, 3).permute(0, 3, 1, 2).float() * 50
    assert segmentation_loss(confident, masks, loss="dice") < 1e-6 < segmentation_loss(logits, masks, loss="dice")
    ignored = masks.clone()
    ignored[:, 0] = IGNORE_INDEX
    changed = logits.clone()
    changed[:, :, 0] = 100.0  # scores at unlabelled pixels do not count
    for kind in ("ce", "dice"):
        assert segmentation_loss(changed, ignored, loss=kind) == pytest.approx(
            float(segmentation_loss(logits, ignored, loss=kind)))
    with pytest.raises(ValueError, match="loss must be one of 'ce', 'dice', 'ce\\+dice'; got 'iou'"):
        segmentation_loss(logits, masks, loss="iou")


# --------------------------------------------------------------------------------------------------- bad input
def test_bad_masks_name_the_argument_expected_and_given() -> None:
    logits = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"masks: expected shape \(N, H, W\) = \(2, 8, 8\) to match the logits "
                                         r"\(2, 3, 8, 8\).*got \(2, 7, 8\)"):
        check_masks(logits, torch.zeros(2, 7, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"masks: expected class indices in \[0, 3\).*or -100.*got values in \[5, 5\]"):
        segmentation_loss(logits, torch.full((2, 8, 8), 5))
    with pytest.raises(ValueError, match=r"got values in \[-1, -1\]"):
        segmentation_loss(logits, torch.full((2, 8, 8), -1))
    with pytest.raises(TypeError, match="masks: expected integer class indices.*got dtype torch.float32"):
        check_masks(logits, torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match=r"logits: expected per-pixel scores.*got \(2, 3\)"):
        segmentation_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"pred: expected class indices in \[0, 2\); got values in \[4, 4\]"):
        segmentation_metrics(torch.full((1, 4, 4), 4), torch.zeros(1, 4, 4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match=r"target: expected shape \(N, H, W\) = \(1, 4, 4\).*got \(1, 4, 5\)"):
        segmentation_metrics(torch.zeros(1, 4, 4, dtype=torch.int64), torch.zeros(1, 4, 5, dtype=torch.int64), 2)


def test_bad_segmentation_datasets_are_refused() -> None:
    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"ImageDataset.labels: expected shape \(3, 8, 8\) for segmentation.*"
                                         r"masks of the images' height and width.*"
                                         r"got torch.int64 tensor of shape \(3, 8, 6\)"):
        ImageDataset(images, torch.zeros(3, 8, 6, dtype=torch.int64), ["bg", "fg"], (0.5,), (0.2,), "toy",
                     "segmentation")
    with pytest.raises(ValueError, match=r"ImageDataset.labels: expected mask values in \[0, 2\) \(2 classes\) or "
                                         r"-100 \(unlabelled\), got values in \[7, 7\]"):
        ImageDataset(images, torch.full((3, 8, 8), 7), ["bg", "fg"], (0.5,), (0.2,), "toy", "segmentation")
    ok = ImageDataset(images, torch.full((3, 8, 8), IGNORE_INDEX), ["bg", "fg"], (0.5,), (0.2,), "toy", "segmentation")
    assert len(ok) == 3


def test_a_model_that_does_not_fit_the_task_is_refused_before_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=r"model='resnet20' is not a segmentation model but data='synthetic_seg' is a "
                                         r"segmentation dataset \(6-class masks of 16x16\); expected per-pixel output "
                                         r"\(1, K, 16, 16\).*got \(1, 6\)"):
        train(tiny(model="resnet20", model_kwargs={"width": 0.25}, out=str(run)))
    with pytest.raises(ValueError, match=r"model='unet' is a segmentation model \(per-pixel output\) but "
                                         r"data='synthetic' is a classification dataset.*expected a classifier"):
        train(tiny(data="synthetic", data_options={"n_train": 32, "n_test": 8, "image_size": 8}, out=str(run)))
    with pytest.raises(ValueError, match=r"num_classes=2 is too small: data='synthetic_seg' has labels 0\.\.5"):
        train(tiny(model_kwargs={**UNET, "num_classes": 2}, out=str(run)))
    from skiplab.models.unet import UNet

    with pytest.raises(ValueError, match=r"model='own' predicts 2 classes per pixel but data='synthetic_seg' has 6"):
        train(tiny(model="own", out=str(run)), builder=lambda **kw: UNet(in_channels=3, num_classes=2, **UNET))
    with pytest.raises(ValueError, match=r"model='own' returns 8x8 maps for 16x16 images.*expected maps of the masks' "
                                         r"size 16x16"):
        train(tiny(model="own", out=str(run)), builder=lambda **kw: torch.nn.Conv2d(3, 6, 2, stride=2))
    with pytest.raises(ValueError, match=r"loss='dice' is for segmentation data; data='synthetic' is a "
                                         r"classification dataset"):
        train(tiny(model="resnet20", model_kwargs={"width": 0.25}, data="synthetic", loss="dice",
                   data_options={"n_train": 32, "n_test": 8, "image_size": 8}, out=str(run)))
    with pytest.raises(ValueError, match="loss must be one of 'ce', 'dice', 'ce\\+dice'; got 'focal'"):
        tiny(loss="focal")
    assert not run.exists()


@pytest.mark.parametrize("argv, words", [
    (["--model", "resnet20", "--model-kwargs", '{"width": 0.25}', "--data", "synthetic_seg"],
     ["model='resnet20' is not a segmentation model", "expected per-pixel output", "got (1, 6)"]),
    (["--model", "unet", "--data", "synthetic", "--data-options", '{"n_train": 8, "n_test": 4, "image_size": 8}'],
     ["model='unet' is a segmentation model", "data='synthetic' is a classification dataset"]),
    (["--model", "unet", "--loss", "iou"], ["loss must be one of 'ce', 'dice', 'ce+dice'; got 'iou'"]),
], ids=["classifier on masks", "unet on labels", "unknown loss"])
def test_cli_bad_segmentation_input_exits_2_without_traceback(argv, words, tmp_path: Path, capsys) -> None:
    from skiplab.cli import main

    run = tmp_path / "r"
    base = ["train", "--data-options", json.dumps(SEG_DATA), "--epochs", "1", "--num-threads", "1", "--out", str(run)]
    with pytest.raises(SystemExit) as e:
        main([*base, *argv])
    err = "".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert e.value.code == 2 and "Traceback" not in err, err
    for w in words:
        assert "".join(w.split()) in err, f"{w!r} not in: {err}"
    assert not run.exists()


# ------------------------------------------------------------------------------------------------ training
def test_segmentation_run_folder_metrics_and_eval(tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = train(tiny(out=str(run), val_split=16, loss="ce+dice"))
    assert r.status == "completed" and r.step == 4  # (48 - 16) / 16 steps per epoch, 2 epochs
    assert r.model_kwargs == {**UNET, "num_classes": 6, "in_channels": 3}
    for h in r.history:
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "val_miou", "val_boundary_f1", "test_loss",
                  "test_acc", "test_miou", "test_boundary_f1"):
            assert h[k] is not None and math.isfinite(h[k]) and (k.endswith("loss") or 0 <= h[k] <= 1), k
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith("time_s,val_miou,val_boundary_f1,test_miou,test_boundary_f1")
    assert {"manifest.json", "metrics.jsonl", "checkpoints", "model.safetensors", "result.json"} <= \
        {p.name for p in run.iterdir()}
    # evaluate_segmentation on the test split reproduces the run's last test metrics (same autocast as training)
    from skiplab.data import BatchLoader
    from skiplab.train import resolve_amp, resolve_device

    test_ds = load_dataset("synthetic_seg", "test", **SEG_DATA)
    m = evaluate_segmentation(r.model, BatchLoader(test_ds, 16, shuffle=False, channels_last=True),
                              amp=resolve_amp("auto", resolve_device("auto")))
    for k in ("loss", "acc", "miou", "boundary_f1"):
        assert m[k] == pytest.approx(r.final[f"test_{k}"], rel=1e-6), k
    # the CLI: eval on the run folder prints the segmentation metrics
    from typer.testing import CliRunner

    from skiplab.cli.app import app

    out = CliRunner().invoke(app, ["eval", "--run", str(run)])
    assert out.exit_code == 0, out.output
    assert re.search(r"synthetic_seg/test \(16 images\).*mean IoU [\d.]+% boundary F1 [\d.]+% \(1 px\) pixel acc",
                     " ".join(out.output.split()))


def test_signal_stop_then_resume_is_bitwise_identical_for_segmentation(tmp_path: Path, monkeypatch) -> None:
    """Crop + flip augmentation moves the masks too (padding unlabelled); stopped mid-epoch 2, resumed: the same
    weights and metrics log as the run that never stopped."""
    kw = dict(epochs=3, crop_padding=2, flip=True, optimizer="adamw", lr=3e-3, loss="ce+dice")
    full = train(tiny(out=str(tmp_path / "full"), **kw))
    monkeypatch.setenv(faults.ENV, "step:5:TERM")
    faults.reset()
    part = train(tiny(out=str(tmp_path / "part"), **kw))
    monkeypatch.delenv(faults.ENV)
    assert part.status == "interrupted" and part.step == 5 and load_checkpoint(tmp_path / "part").meta["step"] == 5
    resumed = train(TrainConfig(resume=str(tmp_path / "part")))
    assert resumed.step == full.step == 9
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k

    def clean(run: str) -> list[dict]:
        recs = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in recs]

    assert clean("part") == clean("full") and any("test_miou" in r for r in clean("full"))


def test_two_process_ddp_matches_single_process_for_segmentation(tmp_path: Path) -> None:
    """Without crop padding every rank's half-batch has the same number of labelled pixels, so the average of the
    two per-rank pixel-mean losses is the full batch's pixel mean: DDP equals one process up to summation order.
    (With crop padding the unlabelled pixels differ between ranks and DDP weights the ranks equally, not the
    pixels.)  No BatchNorm: per-rank batch statistics would be another function."""
    settings = dict(model="unet", model_kwargs={**UNET, "norm": "none"}, data="synthetic_seg",
                    data_options={"n_train": 64, "n_test": 16, "image_size": 16}, epochs=2, batch_size=32,
                    eval_batch_size=16, lr=0.05, num_threads=1, log_every=2, seed=1, augment=False)
    run = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "skiplab", "train", "--out", str(run),
           "--progress", "none", "--model", "unet", "--model-kwargs", json.dumps(settings["model_kwargs"]), "--data",
           "synthetic_seg", "--data-options", json.dumps(settings["data_options"]), "--epochs", "2", "--batch-size",
           "32", "--eval-batch-size", "16", "--lr", "0.05", "--num-threads", "1", "--log-every", "2", "--seed", "1",
           "--no-augment"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", faults.ENV)}
    p = subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    assert p.stdout.count("test mean IoU") == 1  # only rank 0 reports
    single = train(TrainConfig(**settings))
    ck = load_checkpoint(run)
    for k, v in single.model.state_dict().items():
        assert torch.allclose(ck.model_state[k], v, rtol=1e-4, atol=1e-5), k
    hist = json.loads((run / "result.json").read_text())["history"]
    for h, s in zip(hist, single.history):
        assert abs(h["train_loss"] - s["train_loss"]) < 1e-4 and abs(h["train_acc"] - s["train_acc"]) < 1e-6
        assert abs(h["test_miou"] - s["test_miou"]) < 1e-3


# ------------------------------------------------------------------------------------------------- the models
def test_additive_long_skips_and_skip_lesion() -> None:
    torch.manual_seed(0)
    concat, add = skiplab.create_model("unet", **UNET), skiplab.create_model("unet", skip="residual", **UNET)
    plain = skiplab.create_model("plain_unet", **UNET)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(add) == count(plain) < count(concat)
    assert [b.fuse.conv1.in_channels for b in add.decoder] == [b.fuse.conv1.in_channels for b in plain.decoder]
    x = torch.randn(2, 1, 16, 16)
    for net in (concat.eval(), add.eval()):
        before = net(x)
        net.decoder[-1].skip_enabled = False  # cut the full-resolution long skip
        assert not torch.allclose(before, net(x))
        net.decoder[-1].skip_enabled = True
        assert torch.equal(before, net(x))
    for skip in ("concat", "residual"):  # a cut skip is the block fed a zero bridge
        block = skiplab.blocks.unet.UpBlock(8, 4, 4, skip=skip).eval()
        h, bridge = torch.randn(1, 8, 3, 3), torch.randn(1, 4, 6, 6)
        zero = block(h, torch.zeros_like(bridge))
        block.skip_enabled = False
        assert torch.equal(block(h, bridge), zero) and not torch.allclose(zero, _intact(block, h, bridge))
    with pytest.raises(ValueError, match="skip='residual' adds the bridge.*skip_channels must equal its 4 channels"):
        skiplab.blocks.unet.UpBlock(8, 6, 4, skip="residual")


def _intact(block, h, bridge):
    block.skip_enabled = True
    return block(h, bridge)


# ------------------------------------------------------------------------------------------------------ data
def test_stroke_width_of_drawn_bars() -> None:
    masks = torch.zeros(3, 32, 32, dtype=torch.int64)
    masks[0, 10:12, 2:30] = 1  # 2 x 28: 2 * 56 / (2 * 28 + 2 * 2) = 1.87
    masks[1, 10:14, 2:30] = 1  # 4 x 28: 2 * 112 / 64 = 3.5
    w = stroke_width(masks)
    assert w[0] == pytest.approx(112 / 60) and w[1] == pytest.approx(3.5) and math.isnan(w[2])


def test_synthetic_strokes_are_clean_masks_of_degraded_digits() -> None:
    tr = load_dataset("synthetic_strokes", "train", n_train=40, n_test=10)
    te = load_dataset("synthetic_strokes", "test", n_train=40, n_test=10)
    assert tr.task == te.task == "segmentation" and tr.image_shape == (1, 32, 32) and len(te) == 10
    assert tr.classes == ["background", "stroke"] and te.mean == tr.mean
    assert (tr.labels[:, :2] == 0).all() and (tr.labels[:, :, -2:] == 0).all()  # padded 28 -> 32 with background
    assert 0.02 < tr.labels.float().mean() < 0.3
    again = load_dataset("synthetic_strokes", "train", n_train=40, n_test=10)
    assert torch.equal(again.images, tr.images)  # seeded
    blurred = load_dataset("synthetic_strokes", "train", n_train=40, n_test=10, degradation="blur", noise=0.0)
    assert torch.equal(blurred.labels, tr.labels) and not torch.equal(blurred.images, tr.images)
    with pytest.raises(ValueError, match="degradation: expected one of 'downup', 'blur', 'noise'; got 'jpeg'"):
        load_dataset("synthetic_strokes", "train", degradation="jpeg")


def _mnist_dir() -> Path | None:
    from skiplab.data import DatasetNotFoundError
    from skiplab.data.datasets import _find_source

    for place in (ROOT.parent / "shared" / "data", Path(os.environ.get("SKIPLAB_DATA", "/nonexistent"))):
        try:
            _find_source("mnist", place, False, {})
            return place
        except DatasetNotFoundError:
            continue
    return None


@pytest.mark.skipif(_mnist_dir() is None, reason="MNIST's test files are not here")
def test_mnist_strokes_split_and_masks() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonOfficialDataWarning)
        digits = load_dataset("mnist", "test", data_dir=_mnist_dir())
        tr = load_dataset("mnist_strokes", "train", data_dir=_mnist_dir())
        te = load_dataset("mnist_strokes", "test", data_dir=_mnist_dir())
    assert (len(tr), len(te)) == (8000, 2000) and tr.image_shape == te.image_shape == (1, 32, 32)
    test_idx = torch.randperm(10000, generator=torch.Generator().manual_seed(0))[:2000].sort().values
    clean = F.pad(digits.images[test_idx], (2, 2, 2, 2))
    assert torch.equal(te.labels, (clean[:, 0] >= 128).long())  # the target: clean pixels thresholded
    assert (te.images != clean).float().mean() > 0.5  # under sd 0.5 noise most pixels change ...
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonOfficialDataWarning)
        quiet = load_dataset("mnist_strokes", "test", data_dir=_mnist_dir(), noise=0.0)
    assert torch.equal(quiet.images, clean)  # ... and without noise the input is the padded digit itself


# ------------------------------------------------------------------------------------------------ README
def test_readme_segmentation_example_runs() -> None:
    """The README's own-loop example, as printed there: it trains and scores a U-Net on its masks."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    code = [b for b in blocks if "segmentation_loss(" in b]
    assert len(code) == 1, "the README should hold one segmentation example"
    env: dict = {}
    torch.manual_seed(0)
    exec(compile(code[0], "README.md", "exec"), env)  # noqa: S102
    assert env["scores"]["miou"] > 0.8 and 0 <= env["scores"]["boundary_f1"] <= 1
    assert float(env["loss"].detach()) < 0.5


# -------------------------------------------------------------------------------------------------- experiment
def test_unet_skips_experiment_at_a_tiny_setting() -> None:
    from skiplab.experiments import get_experiment
    from skiplab.experiments.base import from_dict
    from skiplab.io import to_jsonable
    from skiplab.report.artifacts import render_figures

    spec = get_experiment("unet_skips")
    cfg = spec.config(quick=True, n_train=48, n_test=24, steps=4, batch_size=16, base_width=4, depth=2, n_show=2,
                      width_bins=2)
    result = spec.run(cfg)
    assert [r.label for r in result.runs] == ["U-Net", "additive", "plain twin"]
    unet, add, plain = result.runs
    assert add.params == plain.params < unet.params
    assert len(unet.lesion_miou) == 2 and plain.lesion_miou == [] and len(unet.boundary_f1) == 3
    assert sum(result.width_counts) == 24 and len(result.width_edges) == 3
    assert {c.key for c in result.claims} == {"long_skips_boundaries", "additive_skips_boundaries",
                                             "finest_skip_matters_most", "thin_strokes"}
    assert all(isinstance(c.held, bool) and c.evidence for c in result.claims)
    data = json.loads(json.dumps(to_jsonable(result)))
    again = from_dict(spec.result_cls, data)
    assert to_jsonable(again) == data
    slugs = [f.spec.slug for f in render_figures(spec, again)]
    assert slugs == ["masks", "width", "lesion"]
    with pytest.raises(ValueError, match="degradation must be one of"):
        spec.config(degradation="jpeg")
    assert spec.config(setting="cifar").data == "mnist_strokes"
