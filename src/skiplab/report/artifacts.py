"""An experiment's run folder: ``result.json`` (the Result), one PNG per registered figure, ``manifest.json``.

The folder alone is enough to rebuild the report section (:func:`load_result` + the figure functions).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skiplab.experiments.base import ExperimentSpec, from_dict, resolve_setting
from skiplab.io import atomic_write_bytes, build_manifest, read_json, to_jsonable, write_json
from skiplab.report.figures import FigureSpec, figures_for

PNG_DPI = 110


@dataclass
class RenderedFigure:
    spec: FigureSpec
    png: bytes
    path: Path | None = None


@dataclass
class Saved:
    """What :func:`save_experiment` wrote."""

    directory: Path
    result: Path
    manifest: Path
    figures: list[RenderedFigure]


def figure_png(fig: Any, dpi: int = PNG_DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def render_figures(spec: ExperimentSpec, result: Any) -> list[RenderedFigure]:
    """Draw every figure registered for ``spec`` (figures with nothing to show are left out)."""
    rendered = []
    label = machine_label()
    for fs in figures_for(spec.name):
        fig = fs.draw(result)
        if fig is not None:
            fig.text(0.995, 0.003, label, ha="right", va="bottom", fontsize=5.5, color="0.45")  # which machine
            rendered.append(RenderedFigure(fs, figure_png(fig, fs.dpi)))
    return rendered


def _machine() -> dict[str, Any]:
    from skiplab.speed import cpu_report

    return cpu_report()


def machine_label() -> str:
    """One line naming the machine a figure was drawn on (the run's own machine: results are drawn where run)."""
    from skiplab.speed import cpu_report

    r = cpu_report()
    gpu = f", GPU {r['cuda']}" if r["cuda"] else ""
    return (f"{r['cpu']} ({r['torch_cpu_capability']}, {'/'.join(r['simd_flags']) or 'no flags read'}), "
            f"{r['cores_visible']} cores{gpu}; CPU autocast {r['amp_auto_cpu']}")


def rerun_command(name: str, out: Path | str, *, quick: bool = False, overrides: list[str] | None = None,
                  setting: str | None = None) -> str:
    setting = resolve_setting(quick, setting)
    parts = ["skiplab", "experiment", name] + {"quick": ["--quick"], "cifar": ["--setting", "cifar"], "full": []}[setting]
    parts += [f"--set {o}" for o in overrides or []]
    return " ".join(parts + ["--out", str(out)])


def _seeds(config: Any) -> list[int]:
    n, first = getattr(config, "n_seeds", None), getattr(config, "first_seed", 0)
    return list(range(first, first + n)) if isinstance(n, int) else []


def save_experiment(spec: ExperimentSpec, result: Any, out_dir: Path | str, *, quick: bool = False, command: str,
                    figures: list[RenderedFigure] | None = None, setting: str | None = None) -> Saved:
    """Write ``result.json``, the PNGs and ``manifest.json`` into ``out_dir`` (created if needed)."""
    setting = resolve_setting(quick, setting)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result_path = write_json(out / "result.json", result)
    figures = render_figures(spec, result) if figures is None else figures
    for f in figures:
        f.path = atomic_write_bytes(out / f"{f.spec.slug}.png", f.png)
    manifest = build_manifest(
        kind=f"experiment:{spec.name}", config=result.config, seeds=_seeds(result.config), device="cpu",
        wall_time_s=getattr(result, "wall_time_s", None),
        extra={"experiment": spec.name, "quick": setting == "quick", "setting": setting, "rerun": command,
               "machine": _machine(),
               "files": ["result.json", *(f"{f.spec.slug}.png" for f in figures)],
               "claims": [{"key": c.key, "held": c.held} for c in getattr(result, "claims", [])]},
    )
    manifest_path = write_json(out / "manifest.json", manifest)
    return Saved(out, result_path, manifest_path, figures)


def load_result(spec: ExperimentSpec, out_dir: Path | str) -> Any | None:
    """The Result saved in ``out_dir/result.json``, or None if there is none.  A file that does not parse as
    this experiment's Result raises ValueError naming the file."""
    path = Path(out_dir) / "result.json"
    if not path.is_file():
        return None
    try:
        return from_dict(spec.result_cls, read_json(path))
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path} is not a saved {spec.name!r} result ({e}); delete it or rerun without --reuse") from e


def same_config(a: Any, b: Any) -> bool:
    return to_jsonable(a) == to_jsonable(b)
