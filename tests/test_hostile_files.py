"""Corrupt and hostile files (issue 8): damaged checkpoints and weights are detected and named, never loaded;
malicious pickles — as weights, as a checkpoint, as a dataset batch — are refused and run nothing; damaged
dataset files and hostile archives are named and never trusted.

Covered elsewhere, not repeated: truncated / tail-cut / bit-flipped / empty checkpoints and a plain weights
file passed as a checkpoint (tests/test_train.py::test_corrupt_checkpoints_are_detected), a checkpoint of
another model or width (test_train.py::test_checkpoint_of_another_model_or_shape_is_refused), a crash
half-way through a checkpoint write (test_train.py, test_reliability_faults.py), malicious torch.save and
protocol-2 pickles as weights (tests/test_weights.py), truncated CIFAR batches, IDX files, tar.gz archives,
broken PNGs, out-of-range labels, a malicious pickle planted as a CIFAR batch and md5 mismatches
(tests/test_data_formats.py).
"""
from __future__ import annotations

import io
import json
import pickle
import random
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from skiplab.cli import main
from skiplab.data import CorruptDataError, load_dataset
from skiplab.registry import create_model
from skiplab.train import CheckpointError, TrainConfig, load_checkpoint, save_checkpoint, train
from skiplab.weights import load_weights, read_weights, save_weights

MODEL = {"width": 0.25}
TINY = dict(model="resnet20", model_kwargs=MODEL, data="synthetic",
            data_options={"n_train": 32, "n_test": 16, "image_size": 8}, epochs=1, batch_size=16, num_threads=1,
            progress="none", test_split=None)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run: its latest checkpoint is the file under attack."""
    path = tmp_path_factory.mktemp("hostile") / "run"
    train(TrainConfig(**TINY, out=str(path)))
    return path


def latest(run: Path) -> Path:
    return run / "checkpoints" / "latest.safetensors"


class Marker:
    """Unpickling this creates the file ``path`` (it runs ``open(path, "w")``)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's message for a user error (status 2, no traceback), without whitespace: rich wraps long lines,
    inside long paths too."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = "".join(capsys.readouterr().err.split())
    assert e.value.code == 2 and "Traceback" not in err, err
    return err


def compact(text: str) -> str:
    return "".join(text.split())


# ------------------------------------------------------------------------------------------------ checkpoints
def test_every_sampled_single_bit_flip_of_a_checkpoint_is_detected(run: Path, tmp_path: Path) -> None:
    """384 one-bit flips — all 8 length bytes, 248 spread over the JSON header, 128 over the tensor bytes:
    every one is refused with a CheckpointError; none loads, none escapes as another exception."""
    data = latest(run).read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(0)
    positions = list(range(8)) + rng.sample(range(8, header_end), 248) + rng.sample(range(header_end, len(data)), 128)
    target = tmp_path / "flipped.safetensors"
    words = {"checksum": 0, "truncated": 0, "corrupt": 0, "not a skiplab": 0}
    for i, pos in enumerate(positions):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (i % 8)
        target.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(target)
        msg = str(e.value)
        assert str(target) in msg
        hits = [w for w in words if w in msg]
        assert hits, msg
        words[hits[0]] += 1
    assert words["checksum"] >= 128  # every flip in the tensor bytes is caught by the checksum


def test_every_sampled_truncation_of_a_checkpoint_is_detected(run: Path, tmp_path: Path) -> None:
    data = latest(run).read_bytes()
    target = tmp_path / "cut.safetensors"
    for n in [0, 1, 7, 8, 9, 100, *range(200, len(data), max(1, len(data) // 61)), len(data) - 1]:
        target.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="truncated|corrupt"):
            load_checkpoint(target)


def test_resuming_a_damaged_checkpoint_is_refused_and_changes_nothing(run: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    damaged = bytearray(latest(copy).read_bytes())
    damaged[-50] ^= 0x04
    latest(copy).write_bytes(bytes(damaged))
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="failed its checksum"):
        train(TrainConfig(resume=str(copy)))
    err = cli_error(["train", "--resume", str(copy)], capsys)
    assert compact("failed its checksum") in err and str(latest(copy)) in err
    err = cli_error(["eval", "--run", str(copy)], capsys)
    assert compact("failed its checksum") in err
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_wrong_shape_tensor_with_a_valid_checksum_is_named(run: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint whose checksum is right but whose tensors do not fit the model it names (a crafted file,
    or one written by a buggy tool): resuming it names the tensor and both shapes."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ck = load_checkpoint(copy)
    bad = dict(ck.model_state)
    bad["head.fc.weight"] = torch.zeros(3, 16)  # 3 classes where the model has 10

    class Holder(torch.nn.Module):
        def state_dict(self, *a: Any, **k: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
            return bad

    save_checkpoint(ck.path, Holder(), model_name=ck.model_name, model_kwargs=ck.model_kwargs, step=ck.meta["step"],
                    epoch=ck.meta["epoch"], config=ck.meta["config"], state=ck.state)
    load_checkpoint(copy)  # the file itself is intact
    expected = "does not fit the model: wrong shape ['head.fc.weight: checkpoint (3, 16) vs model (10, 16)']"
    with pytest.raises(CheckpointError) as e:
        train(TrainConfig(resume=str(copy)))
    assert expected in str(e.value)
    assert compact(expected) in cli_error(["eval", "--run", str(copy)], capsys)


def test_checkpoint_of_another_model_used_as_weights_says_so(run: Path) -> None:
    # A training checkpoint reads as a weights file (model tensors, checksum verified)...
    state, meta = read_weights(latest(run))
    assert meta["model_name"] == "resnet20" and "stem.conv.weight" in state and not any("/" in k for k in state)
    model = create_model("resnet20", **MODEL, weights=str(latest(run)))
    assert torch.equal(model.stem.conv.weight, load_checkpoint(run).model_state["stem.conv.weight"])
    # ...and loading it into another model names the model it came from and what does not fit
    with pytest.raises(ValueError) as e:
        create_model("resnet32", **MODEL, weights=str(latest(run)))
    assert "saved from model 'resnet20'" in str(e.value) and "not 'resnet32'" in str(e.value)
    assert "72 missing keys" in str(e.value)


# ------------------------------------------------------------------------------------------------ weights
def test_bit_flipped_or_truncated_weights_file_is_refused(tmp_path: Path) -> None:
    path = save_weights(create_model("resnet20", **MODEL), tmp_path / "w.safetensors")
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(1)
    for i, pos in enumerate(rng.sample(range(header_end, len(data)), 32)):  # flips in the tensor bytes
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (i % 8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match="failed its checksum"):
            load_weights(create_model("resnet20", **MODEL), path)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_weights(create_model("resnet20", **MODEL), path)
    path.write_bytes(data)
    load_weights(create_model("resnet20", **MODEL), path)  # the intact file loads


def _evil_files(d: Path, marker: Path) -> dict[str, Path]:
    """The same code-running payload dressed as several kinds of weights file."""
    payload = {"stem.conv.weight": torch.zeros(1), "x": Marker(marker)}
    files = {}
    torch.save(payload, d / "zip.pth")
    files["torch.save zip"] = d / "zip.pth"
    torch.save({"state_dict": payload}, d / "wrapped.pt")
    files["inside a state_dict wrapper"] = d / "wrapped.pt"
    (d / "p0.pth").write_bytes(pickle.dumps(payload, protocol=0))
    files["protocol-0 text pickle"] = d / "p0.pth"
    (d / "p5.bin").write_bytes(pickle.dumps(payload, protocol=5))
    files["protocol-5 pickle as .bin"] = d / "p5.bin"
    (d / "renamed.safetensors").write_bytes(pickle.dumps(payload, protocol=2))
    files["pickle named .safetensors"] = d / "renamed.safetensors"
    (d / "noext").write_bytes(pickle.dumps(payload, protocol=4))
    files["pickle without a suffix"] = d / "noext"
    pickle.loads((d / "p0.pth").read_bytes())  # the control: a plain unpickler does run it
    assert marker.exists()
    marker.unlink()
    return files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's note on protocols 4/5
def test_malicious_pickles_as_weights_are_refused_and_run_nothing(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    for what, path in _evil_files(tmp_path, marker).items():
        with pytest.raises(ValueError) as e:
            create_model("resnet20", **MODEL, weights=str(path))
        assert str(path) in str(e.value), what
        assert "refusing to load" in str(e.value) or "not a readable" in str(e.value), (what, str(e.value))
        err = cli_error(["eval", "--weights", str(path), "--model", "resnet20", "--model-kwargs",
                         json.dumps(MODEL), "--data", "synthetic"], capsys)
        assert path.name in err, what
        assert not marker.exists(), f"{what}: the payload ran"


def test_malicious_pickles_as_checkpoints_are_refused_and_run_nothing(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    for what, path in _evil_files(tmp_path, marker).items():
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
        with pytest.raises(CheckpointError):
            train(TrainConfig(resume=str(path)))
        cli_error(["train", "--resume", str(path)], capsys)
        cli_error(["eval", "--run", str(path)], capsys)
        assert not marker.exists(), f"{what}: the payload ran"


def test_pickle_given_as_checkpoint_is_called_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(create_model("resnet20", **MODEL).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a skiplab training checkpoint"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------------ datasets
@pytest.fixture
def png_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "tree"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def _zip(tree: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(tree.rglob("*.png")):
            zf.write(p, p.relative_to(tree).as_posix())
    return dest


def test_damaged_zip_archive_is_named(png_tree: Path, tmp_path: Path) -> None:
    data = _zip(png_tree, tmp_path / "images.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDataError, match=r"cut\.zip: damaged or truncated archive"):
        load_dataset("imagefolder", data_dir=tmp_path / "cut.zip")
    first = data.index(b"\x89PNG")  # a bit flip inside the first stored image: its CRC-32 no longer matches
    flipped = bytearray(data)
    flipped[first + 40] ^= 0x01
    (tmp_path / "flip.zip").write_bytes(bytes(flipped))
    with pytest.raises(CorruptDataError, match=r"flip\.zip: damaged or truncated archive .*CRC"):
        load_dataset("imagefolder", data_dir=tmp_path / "flip.zip")


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_truncated_image_inside_an_archive_is_named(png_tree: Path, tmp_path: Path, fmt: str) -> None:
    victim = png_tree / "train" / "b" / "1.png"
    buf = io.BytesIO()
    Image.open(victim).save(buf, format="JPEG" if fmt == "jpg" else "PNG")
    victim.unlink()
    cut = png_tree / "train" / "b" / f"1.{fmt}"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(png_tree / "train", arcname="train")
        tf.add(png_tree / "test", arcname="test")
    with pytest.raises(CorruptDataError, match=rf"images\.tar\.gz:train/b/1\.{fmt}: cannot decode image"):
        load_dataset("imagefolder", data_dir=archive)


@pytest.mark.parametrize("bad, words", [
    ({"labels": [1, 2], "data": np.zeros((2, 3000), np.uint8)}, "'data' must be a uint8 array (N, 3072)"),
    ([1, 2, 3], "expected a pickled dict, got list"),
    ({"labels": [1], "data": np.zeros((2, 3072), np.uint8)}, "'labels' must be a list of 2 ints, got list of 1"),
    ({"labels": [1, 2]}, "'data' must be a uint8 array"),
    ({"labels": ["x", "y"], "data": np.zeros((2, 3072), np.uint8)}, "'labels' holds non-integer labels"),
])
def test_malformed_cifar_batch_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: Any,
                                        words: str) -> None:
    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]:
        good = {"labels": [1, 2], "data": rng.integers(0, 256, (2, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(bad if name == "data_batch_3" else good, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    with pytest.raises(CorruptDataError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(folder / "data_batch_3") in str(e.value) and words in str(e.value)


def test_hostile_archive_members_never_touch_the_file_system(png_tree: Path, tmp_path: Path) -> None:
    """Members with ``../`` or absolute paths and links out of the archive: read in memory only, so nothing
    is written anywhere; links are skipped, and paths outside the one split/class/image tree are refused."""
    payload = (png_tree / "train" / "a" / "0.png").read_bytes()

    def archive(name: str, extra: list[tarfile.TarInfo]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w") as tf:
            tf.add(png_tree / "train", arcname="train")
            tf.add(png_tree / "test", arcname="test")
            for info in extra:
                tf.addfile(info, io.BytesIO(payload) if info.isfile() else None)
        return path

    def member(name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        return info

    link = tarfile.TarInfo("train/a/passwd.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("train/b/hard.png")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../../../etc/passwd"
    ds = load_dataset("imagefolder", "train", data_dir=archive("links.tar", [link, hard]))
    assert len(ds) == 6  # the two links were skipped, not followed
    escape = tmp_path / "escape"
    # a "../" member is skipped like any hidden path...
    ds = load_dataset("imagefolder", "train", data_dir=archive("dotdot.tar", [member(f"../../{escape.name}/x.png")]))
    assert len(ds) == 6
    # ...and one outside the tree (here an absolute path) makes the archive's layout invalid
    with pytest.raises(CorruptDataError, match=r"absolute\.tar: images sit at different depths"):
        load_dataset("imagefolder", "train", data_dir=archive("absolute.tar", [member(f"{escape}/train/a/y.png")]))
    assert not escape.exists() and not any(p.name in ("x.png", "y.png") for p in tmp_path.rglob("*.png"))
