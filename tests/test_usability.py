"""Small defects found by trying skiplab as a newcomer (issue 15): each fails without its fix."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from skiplab.cli import main
from skiplab.io import atomic_write_text, write_json
from skiplab.registry import list_models, unknown_model_message


@pytest.mark.parametrize("name,expected", [("mlp_residual", ["mlp", "plain_mlp"]), ("residual_unet", ["unet"]),
                                           ("unet_plain", ["plain_unet"])])
def test_an_unknown_twin_name_gets_the_registered_twins_suggested(name: str, expected: list[str]) -> None:
    list_models()
    msg = unknown_model_message(name)
    hint = msg.split("Did you mean: ")[1].split("?")[0].split(", ")
    assert all(e in hint for e in expected), msg


def test_results_and_reports_are_written_readable_under_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        a = atomic_write_text(tmp_path / "index.html", "<p>shared</p>")
        b = write_json(tmp_path / "result.json", {"x": 1})
    finally:
        os.umask(old)
    for p in (a, b):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, oct(p.stat().st_mode)


def test_train_cli_max_steps_alone_is_not_refused_for_the_default_epochs(tmp_path: Path) -> None:
    main(["train", "--model", "resnet20", "--model-kwargs", '{"width": 0.25}', "--data", "synthetic",
          "--data-options", '{"n_train": 32, "n_test": 16, "image_size": 8}', "--max-steps", "3", "--batch-size",
          "16", "--num-threads", "1", "--progress", "none", "--out", str(tmp_path / "run")])
    from skiplab.io import read_json

    result = read_json(tmp_path / "run" / "result.json")
    assert result["final"]["step"] == 3
