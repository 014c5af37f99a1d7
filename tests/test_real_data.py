"""The real-data ("cifar") setting of every training experiment (issue 13), wired on a tiny slice of the real
archives: a few hundred CIFAR-10 JPEGs cut from ../shared/data/cifar10-jpeg.tar.gz and the shared MNIST test set.
The long runs are results (results/cifar/), not tests."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import pytest
import torch

from skiplab.data import NonOfficialDataWarning
from skiplab.experiments import experiments, get_experiment
from skiplab.experiments import training_runs as tr

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ARCHIVE = SHARED / "cifar10-jpeg.tar.gz"
PER_CLASS = {"train": 16, "test": 4}  # 160 training and 40 test images
TRAINING = ("degradation", "identity", "variants", "stochastic_depth", "orderings", "lesion", "landscape", "features")
# Tiny budgets on the slice: the settings' nets and widths, a few steps
TINY = dict(steps=2, batch_size=16, eval_points=1, n_train_eval=32)
EXTRA = {
    "lesion": dict(n_eval=40, draws=1, path_samples=1, path_batch=8),
    "landscape": dict(grid_points=3, line_points=3, n_eval=16, chunk=16),
    "features": dict(n_stats=64, n_images=2, n_channels=2),
}


@pytest.fixture(scope="module")
def cifar_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree of the first images of every class of the real archive."""
    assert ARCHIVE.is_file(), f"expected the shared CIFAR-10 copy at {ARCHIVE}"
    root = tmp_path_factory.mktemp("cifar_slice") / "cifar10"
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(ARCHIVE) as tf:
        for member in tf:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3:
                continue
            split, cls = parts[0], parts[1]
            if taken.get((split, cls), 0) >= PER_CLASS[split]:
                continue
            taken[(split, cls)] = taken.get((split, cls), 0) + 1
            target = root / split / cls / parts[2]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tf.extractfile(member).read())
    assert len(taken) == 20 and sum(taken.values()) == 200
    return root


@pytest.fixture()
def nets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKIPLAB_NETS", str(tmp_path / "nets"))
    tr.clear_cache()
    yield tmp_path / "nets"
    tr.clear_cache()


def test_every_training_experiment_has_a_real_data_setting_at_paper_width() -> None:
    for name in TRAINING:
        spec = get_experiment(name)
        assert spec.has_setting("cifar"), name
        cfg = spec.config(setting="cifar")
        assert cfg.data in ("cifar10", "mnist") and cfg.cache and getattr(cfg, "width", 1.0) == 1.0, name
        assert not cfg.data.startswith("synthetic") and cfg.image_size == 0, name
        assert spec.config(setting="quick").data.startswith("synthetic"), name
    assert get_experiment("features").config(setting="cifar").resplit == 2000  # MNIST's test file, split
    # the nets the analyses need are the degradation study's: same recipe, so one cache entry serves all
    deg = get_experiment("degradation").config(setting="cifar")
    for name in ("identity", "lesion", "landscape", "stochastic_depth"):
        cfg = get_experiment(name).config(setting="cifar")
        same = {k: getattr(cfg, k) for k in ("steps", "batch_size", "lr", "weight_decay", "schedule", "eval_points",
                                              "n_train_eval", "crop_padding", "flip", "amp")}
        assert same == {k: getattr(deg, k) for k in same}, name
    with pytest.raises(ValueError, match="setting must be one of quick, cifar, full; got 'gpu'"):
        get_experiment("degradation").config(setting="gpu")


def test_full_setting_trains_on_cifar10_and_says_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    """--full defaults to CIFAR-10 (the generated set is the quick setting's only); without it, the error names
    every place looked."""
    from skiplab.data import DatasetNotFoundError

    cfg = get_experiment("degradation").config()
    assert cfg.data == "cifar10" and cfg.steps == 64000
    monkeypatch.setenv("SKIPLAB_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"cifar10: not found; looked in .*nowhere; .*home.*\.cache"):
        tr.data_dir_of(cfg)


@pytest.mark.parametrize("name", TRAINING)
def test_cifar_setting_runs_on_a_slice_of_the_real_data(name: str, cifar_slice: Path, nets_dir: Path) -> None:
    spec = get_experiment(name)
    data = dict(data_dir=str(SHARED)) if name == "features" else dict(data_dir=str(cifar_slice))
    cfg = spec.config(setting="cifar", **TINY, **data, **EXTRA.get(name, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonOfficialDataWarning)  # a slice is not the official release
        result = spec.run(cfg)
    assert result.claims and all(c.evidence for c in result.claims)
    trained = sorted(p.name.rsplit("-", 1)[0] for p in nets_dir.iterdir())
    assert trained and all((nets_dir / p / "net.safetensors").is_file() for p in os.listdir(nets_dir)), trained
    if name == "degradation":
        assert trained == ["plain20", "plain32", "plain44", "plain56", "resnet20", "resnet32", "resnet44", "resnet56"]


def test_cached_nets_are_reused_across_processes_without_training(cifar_slice: Path, nets_dir: Path,
                                                                   monkeypatch) -> None:
    cfg = get_experiment("degradation").config(setting="cifar", **TINY, data_dir=str(cifar_slice), depths=(20, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonOfficialDataWarning)
        first = get_experiment("degradation").run(cfg)
        tr.clear_cache()  # a new process: only the disk cache is left

        def no_training(*args, **kwargs):
            raise AssertionError("a cached net was trained again")

        monkeypatch.setattr("skiplab.train.train", no_training)
        again = get_experiment("degradation").run(cfg)
    assert [r.final_test_error for r in again.runs] == [r.final_test_error for r in first.runs]
    assert [r.train_error for r in again.runs] == [r.train_error for r in first.runs]


def test_a_stopped_net_continues_where_it_stopped_and_ends_as_an_uninterrupted_one(cifar_slice: Path,
                                                                                     tmp_path: Path) -> None:
    """Killed (SIGKILL) just after its first epoch checkpoint, the net resumes from it on the next run and its
    final weights equal those of a run never stopped."""
    code = ("import warnings, sys; warnings.simplefilter('ignore'); import torch; torch.set_num_threads(1);"
            "from skiplab.experiments import get_experiment as g;"
            f"c = g('degradation').config(setting='cifar', steps=12, batch_size=16, eval_points=2, n_train_eval=32,"
            f" data_dir={str(cifar_slice)!r}, depths=(20, 32));"
            "from skiplab.experiments.training_runs import train_net;"
            "train_net(c, 'resnet20', {'width': 1.0}, 0)")

    def run(nets: Path, fault: str | None) -> subprocess.CompletedProcess:
        env = {**os.environ, "SKIPLAB_NETS": str(nets), "OMP_NUM_THREADS": "1"}
        env.pop("SKIPLAB_FAULT", None)
        if fault:
            env["SKIPLAB_FAULT"] = fault
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)

    straight = run(tmp_path / "a", None)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = run(tmp_path / "b", "ckpt_done:1")
    assert killed.returncode != 0
    (folder,) = (tmp_path / "b").iterdir()
    assert (folder / "train" / "checkpoints" / "latest.safetensors").is_file()
    assert not (folder / "net.safetensors").exists()
    resumed = run(tmp_path / "b", None)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    import json

    from safetensors.torch import load_file

    manifest = json.loads((folder / "train" / "manifest.json").read_text())
    assert manifest["resumed_at_steps"] == [10]  # continued from the first epoch's checkpoint, not from scratch

    a = load_file(next((tmp_path / "a").iterdir()) / "net.safetensors")
    b = load_file(folder / "net.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_setting_flag_reaches_the_saved_manifest_and_rerun_command(cifar_slice: Path, nets_dir: Path,
                                                                    tmp_path: Path) -> None:
    from skiplab.cli import main
    from skiplab.io import read_json

    out = tmp_path / "degradation"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonOfficialDataWarning)
        main(["experiment", "degradation", "--setting", "cifar", "--set", "steps=2", "--set", "batch_size=16",
              "--set", "depths=20,32", "--set", "n_train_eval=32", "--set", f"data_dir={cifar_slice}", "--out",
              str(out)])
    manifest = read_json(out / "manifest.json")
    assert manifest["setting"] == "cifar" and "--setting cifar" in manifest["rerun"]
    assert manifest["machine"]["cpu"] and "amp_auto_cpu" in manifest["machine"]
    # RESULTS.md rows come from the saved result: one per claim, its verdict, its command; the rest listed as not run
    from skiplab.report.markdown import results_markdown

    md = results_markdown(tmp_path, experiments(), link_base="results/")
    result = read_json(out / "result.json")
    rows = [line for line in md.splitlines() if line.startswith("| [The degradation problem](results/deg")]
    assert len(rows) == len(result["claims"]) == 3
    for row, claim in zip(rows, result["claims"]):
        assert ("**held**" if claim["held"] else "**did not hold**") in row and "--setting cifar" in row
    assert "Not run yet" in md and "skiplab experiment lesion --setting cifar" in md
    # a set produced in pieces: the page of what is saved, nothing run, the saved figures as they were
    from skiplab.report.build import build_report

    png = (out / "curves.png").read_bytes()
    index = build_report(tmp_path, setting="cifar", saved_only=True)
    page = index.read_text()
    assert 'id="degradation"' in page and 'id="lesion"' not in page and "--setting cifar" in page
    assert (out / "curves.png").read_bytes() == png and (tmp_path / "RESULTS.md").is_file()


def test_every_registered_experiment_resolves_the_cifar_setting() -> None:
    for spec in experiments():
        cfg = spec.config(setting="cifar")
        assert cfg == (spec.config_cls.cifar() if spec.has_setting("cifar") else spec.config_cls())
