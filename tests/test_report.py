"""Figures render, the HTML page is self-contained and complete, saved results are reused, `skiplab report`."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skiplab.experiments import experiments, get_experiment, shattered, signal, vanishing
from skiplab.report.artifacts import load_result, render_figures
from skiplab.report.build import build_report
from skiplab.report.figures import figures_for
from skiplab.report.html import fmt

TINY = {
    "vanishing": vanishing.Config(depths=(3, 5), acts=("sigmoid", "relu"), norms=("none", "batch"),
                                  skips=("none", "residual", "highway"), width=8, in_features=6, batch=8, n_seeds=2,
                                  cnn_models=("plain20",), cnn_norms=("batch",), cnn_batch=2, cnn_image_size=8),
    "shattered": shattered.Config(nets=(shattered.NetSpec("1-layer", 0, "none", "none"),
                                        shattered.NetSpec("24-layer plain", 5, "none", "batch"),
                                        shattered.NetSpec("50-block resnet", 5, "residual", "batch")),
                                  n_points=32, width=12, n_seeds=3, max_lag=8, sweep_depths=(1, 3), sweep_seeds=2),
    "signal": signal.Config(depth=5, width=12, batch=12, n_seeds=2),
}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    configs = {s.name: TINY.get(s.name) for s in experiments() if s.name in TINY}
    build_report(out, quick=True, names=list(configs), configs=configs)
    return out


def test_every_registered_experiment_has_figures() -> None:
    for spec in experiments():
        assert figures_for(spec.name), f"{spec.name} has no registered figure"


def test_figures_render_to_png(report_dir: Path) -> None:
    for name in TINY:  # build_report drew every registered figure and saved it beside result.json
        pngs = {p.stem: p.read_bytes() for p in (report_dir / name).glob("*.png")}
        assert sorted(pngs) == sorted(f.slug for f in figures_for(name))  # each had something to show
        assert all(png[:8] == PNG and len(png) > 5_000 for png in pngs.values())


def test_a_figure_with_nothing_to_show_is_left_out() -> None:
    spec = get_experiment("vanishing")
    cfg = vanishing.Config(depths=(2,), acts=("relu",), norms=("none",), skips=("none",), width=4, in_features=4,
                           batch=4, n_seeds=1, cnn_models=())
    slugs = [f.spec.slug for f in render_figures(spec, spec.run(cfg))]
    assert "cnn_gradients" not in slugs and "first_layer_vs_depth" not in slugs and "gradients_per_layer" in slugs


def test_page_is_self_contained_and_has_every_section(report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and 'name="viewport"' in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "external asset reference"
    assert "<script" not in page and "<link" not in page and "@import" not in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == sum(len(figures_for(n)) for n in TINY)
    for name in TINY:
        spec = get_experiment(name)
        assert f'id="{name}"' in page and spec.title in page and spec.question in page
        assert f"skiplab experiment {name} --quick --out" in page
        result = load_result(spec, report_dir / name)
        for claim in result.claims:
            assert claim.statement.replace("'", "&#x27;") in page
    verdicts = page.count('class="verdict held"') + page.count('class="verdict not"')
    assert verdicts == sum(len(load_result(get_experiment(n), report_dir / n).claims) for n in TINY)
    assert "<table>" in page and "lag-1 autocorrelation" in page


def test_report_manifest_and_reuse(report_dir: Path) -> None:
    manifest = json.loads((report_dir / "manifest.json").read_text())
    assert [s["experiment"] for s in manifest["sections"]] == list(TINY)
    assert not any(s["reused"] for s in manifest["sections"])
    configs = {name: TINY[name] for name in TINY}
    build_report(report_dir, quick=True, reuse=True, names=["signal"], configs=configs)
    again = json.loads((report_dir / "manifest.json").read_text())
    assert again["sections"][0]["reused"] is True
    changed = {"signal": signal.Config(depth=4, width=12, batch=12, n_seeds=1)}
    build_report(report_dir, quick=True, reuse=True, names=["signal"], configs=changed)
    third = json.loads((report_dir / "manifest.json").read_text())
    assert third["sections"][0]["reused"] is False  # a different config is run, not reused
    assert json.loads((report_dir / "signal" / "result.json").read_text())["config"]["depth"] == 4


def test_number_formatting() -> None:
    assert fmt(float("nan")) == "–" and fmt(1.23456) == "1.23" and fmt(2e-63) == "2.00e-63" and fmt(7) == "7"
    assert fmt("held") == "held"


def test_cli_report_rejects_unknown_experiment(tmp_path: Path) -> None:
    import skiplab.cli.report  # noqa: F401
    from skiplab.cli.app import app

    res = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--only", "nope"])
    assert res.exit_code != 0 and "unknown experiment" in str(res.exception)
    (tmp_path / "index.html").write_text("an earlier report")
    res = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--only", "signal"])
    assert res.exit_code != 0 and "--overwrite" in str(res.exception)
    assert (tmp_path / "index.html").read_text() == "an earlier report"


def test_a_failing_experiment_gets_an_error_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import skiplab.report.build as build

    def broken(cfg, progress=None):
        raise RuntimeError("no data here")

    spec = dataclasses.replace(get_experiment("signal"), run=broken)
    monkeypatch.setattr(build, "select", lambda names: [spec])
    index = build_report(tmp_path, quick=True)
    page = index.read_text(encoding="utf-8")
    assert "This experiment failed" in page and "RuntimeError: no data here" in page
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["sections"][0]["error"] == "RuntimeError: no data here"
    with pytest.raises(RuntimeError, match="no data here"):
        build_report(tmp_path, quick=True, strict=True)
