"""skiplab.keras on every tested Keras backend, each in its own process (Keras fixes its backend at import).

tests/keras_layer_checks.py holds the checks; here each backend runs them under pytest in a subprocess.  A
backend that is missing (its package not installed) fails its test: it is never skipped.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = "tests/keras_layer_checks.py"
BACKENDS = ("torch", "jax", "tensorflow")
MIN_CHECKS = 22  # keras_layer_checks.py's test count; fewer passing means some were skipped or deselected


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    return env


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layers_on_backend(backend: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", CHECKS, "-q", "-p", "no:cacheprovider", "-p", "no:warnings"],
        cwd=ROOT, env=_env(KERAS_BACKEND=backend), capture_output=True, text=True, timeout=540,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"skiplab.keras checks failed on the {backend} backend:\n{output[-6000:]}"
    summary = proc.stdout.strip().splitlines()[-1]
    found = re.fullmatch(r"=*\s*(\d+) passed in [\d.]+s.*", summary)
    assert found, f"expected only passes on {backend}, got: {summary}"  # no skips, xfails or deselections
    assert int(found.group(1)) >= MIN_CHECKS, summary


def test_import_skiplab_does_not_import_keras() -> None:
    proc = _python("import sys, skiplab; print('keras' in sys.modules, 'jax' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


def test_missing_keras_gives_an_actionable_import_error() -> None:
    code = (
        "import sys\n"
        "sys.modules['keras'] = None  # as if Keras were not installed\n"
        "try:\n"
        "    import skiplab.keras\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'skiplab[keras]'" in proc.stdout


def test_missing_backend_gives_an_actionable_import_error() -> None:
    code = (
        "import sys\n"
        "sys.modules['jax'] = None  # as if the configured backend were not installed\n"
        "try:\n"
        "    import skiplab.keras\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    proc = _python(code, KERAS_BACKEND="jax")
    assert proc.returncode == 0, proc.stderr
    assert "configured for the 'jax' backend, which is not installed" in proc.stdout
    assert "KERAS_BACKEND" in proc.stdout
