"""`skiplab models`, `skiplab summary`, and how the CLI reports user errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from skiplab.cli import main
from skiplab.summary import parse_input_size, summarize


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_params_flops_and_skips(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "models", "resnet*")
    assert code == 0
    assert "resnet50" in out and "25,557,032" in out
    assert "resnet20" in out and "269,722" in out


def test_summary_per_stage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "summary", "resnet20", "--input-size", "3,32,32")
    assert code == 0
    assert "stages.2" in out and "64x8x8" in out and "269,722" in out


def test_resnet50_flops_match_published_multiply_adds() -> None:
    # He et al. 2015 Table 1: ResNet-50 3.8e9 FLOPs (multiply-adds); torchvision quotes 4.09 GMACs.
    s = summarize("resnet50")
    assert 4.0 < s.gmacs < 4.2, s.gmacs
    assert s.skips == 16
    stage_flops = sum(r.flops for r in s.stages)
    assert stage_flops == s.flops, "per-stage FLOPs must add up to the total"


def test_resnet20_flops() -> None:
    # ~41 M multiply-adds for ResNet-20 on 32x32 (widely quoted 40.8M / 41M).
    s = summarize("resnet20")
    assert 40e6 < s.flops / 2 < 42e6, s.flops
    assert s.skips == 9


@pytest.mark.parametrize("text", ["", "a,b", "3,-1,4", "0"])
def test_bad_input_size(text: str) -> None:
    with pytest.raises(ValueError, match="--input-size"):
        parse_input_size(text)


def test_unknown_model_exit_2_with_suggestion_and_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "skiplab", "summary", "resnet05"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "resnet50" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def test_debug_flag_shows_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "skiplab", "--debug", "summary", "resnet05"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_lists_commands() -> None:
    proc = subprocess.run([sys.executable, "-m", "skiplab", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "models" in proc.stdout and "summary" in proc.stdout


def test_convert_foreign_weights_to_safetensors(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import torch

    import skiplab
    from skiplab.weights import read_weights, save_weights

    src = skiplab.create_model("resnet18", num_classes=4, width=0.25)
    save_weights(src, tmp_path / "tv.pth", format="torchvision")  # torchvision's key names
    out = tmp_path / "r18.safetensors"
    args = ["convert", str(tmp_path / "tv.pth"), "--model", "resnet18", "--model-kwargs",
            '{"num_classes": 4, "width": 0.25}', "--out", str(out)]
    code, text, _ = run_cli(capsys, *args)
    assert code == 0 and "r18.safetensors" in text
    state, meta = read_weights(out)
    assert meta["model_name"] == "resnet18" and "stem.conv.weight" in state
    for key, value in src.state_dict().items():
        assert torch.equal(state[key], value), key
    code, _, err = run_cli(capsys, *args)  # never overwritten without being asked
    assert code == 2 and "exists; pass --overwrite" in err
    assert run_cli(capsys, *args, "--overwrite")[0] == 0
    code, _, err = run_cli(capsys, *args[:-1], str(tmp_path / "x.pth"))
    assert code == 2 and "--out must end in .safetensors" in err
