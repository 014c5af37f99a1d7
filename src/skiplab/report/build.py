"""Run (or reuse) every registered experiment and write the report folder:

    OUT/index.html              the self-contained page
    OUT/manifest.json           versions, settings, per-experiment wall times and verdicts
    OUT/<experiment>/           result.json, <figure>.png, manifest.json  (see report.artifacts)
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from skiplab.experiments import experiments, get_experiment
from skiplab.experiments.base import ExperimentSpec, Progress, resolve_setting
from skiplab.io import atomic_write_text, build_manifest, write_json
from skiplab.report.artifacts import load_result, render_figures, rerun_command, same_config, save_experiment
from skiplab.report.html import Section, render_page

# Called as on_experiment(index, count, spec) before each experiment, and with a Progress for its steps.
OnExperiment = Callable[[int, int, ExperimentSpec], Progress | None]


def select(names: Sequence[str] | None) -> list[ExperimentSpec]:
    """The registered experiments, or the named ones (unknown names raise KeyError listing the known ones)."""
    return experiments() if not names else [get_experiment(n) for n in names]


def _saved_section(spec: ExperimentSpec, result: Any, folder: Path, command: str) -> Section:
    """A section of a saved result as it was saved: its PNGs (labelled with the machine that ran it) and command."""
    from skiplab.io import read_json
    from skiplab.report.artifacts import RenderedFigure
    from skiplab.report.figures import figures_for

    manifest = read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
    figures = [RenderedFigure(fs, (folder / f"{fs.slug}.png").read_bytes(), folder / f"{fs.slug}.png")
               for fs in figures_for(spec.name) if (folder / f"{fs.slug}.png").is_file()]
    return Section(spec, result, figures, manifest.get("rerun", command), reused=True)


def build_report(out: Path | str, *, quick: bool = False, reuse: bool = False, names: Sequence[str] | None = None,
                 on_experiment: OnExperiment | None = None, configs: Mapping[str, Any] | None = None,
                 strict: bool = False, setting: str | None = None, saved_only: bool = False) -> Path:
    """Run the experiments (or, with ``reuse``, load ``OUT/<name>/result.json`` when its config matches the one
    that would run) and write the page.  Returns the path of ``index.html``.

    ``configs`` maps an experiment name to the Config to run instead of its quick/full default (the rerun
    command printed in the page then only reproduces the default).  An experiment that raises gets a section
    showing its error (and ``"error"`` in the manifest) unless ``strict``, which re-raises.  ``saved_only``: run
    nothing — the page shows exactly the results saved in ``OUT/<name>/`` (their own figures and rerun commands,
    whatever their configuration); experiments without one are left out of the page and listed in RESULTS.md."""
    out = Path(out)
    t0 = time.perf_counter()
    setting = resolve_setting(quick, setting)
    specs = select(names)
    sections: list[Section] = []
    for i, spec in enumerate(specs):
        progress = on_experiment(i, len(specs), spec) if on_experiment else None
        folder = out / spec.name
        cfg = configs[spec.name] if configs and spec.name in configs else spec.config(setting=setting)
        command = rerun_command(spec.name, folder, setting=setting)
        result, notes = None, []
        if saved_only:
            saved = load_result(spec, folder)
            if saved is not None:
                sections.append(_saved_section(spec, saved, folder, command))
            continue
        if reuse:
            saved = load_result(spec, folder)
            if saved is not None and same_config(saved.config, cfg):
                result = saved
            elif saved is not None:
                notes.append("A saved result had a different configuration; it was run again.")
        reused = result is not None
        try:
            if result is None:
                result = spec.run(cfg, progress=progress)
            figures = render_figures(spec, result)
            save_experiment(spec, result, folder, setting=setting, command=command, figures=figures)
        except Exception as e:  # one broken experiment must not hide the others: its section shows the error
            if strict:
                raise
            sections.append(Section(spec, None, [], command, error=f"{type(e).__name__}: {e}"))
            continue
        sections.append(Section(spec, result, figures, command, reused=reused, notes=notes))

    import skiplab

    wall = time.perf_counter() - t0
    described = {"quick": "quick (demo) settings", "cifar": "real-data (cifar) settings",
                 "full": "full settings"}[setting]
    from skiplab.report.artifacts import machine_label

    page = render_page(
        sections,
        subtitle=f"Generated {time.strftime('%Y-%m-%d %H:%M')} with {described} in {wall:.0f} s on {machine_label()}. "
                 "Every verdict below is "
                 "computed from this run's numbers; each section ends with the command that reruns it.",
        footer=f"skiplab {skiplab.__version__}. Rebuild this page with: skiplab report --out {out}"
               + {"quick": " --quick", "cifar": " --setting cifar", "full": ""}[setting] + " --reuse",
    )
    index = atomic_write_text(out / "index.html", page)
    from skiplab.report.markdown import results_markdown

    atomic_write_text(out / "RESULTS.md", results_markdown(  # every experiment: those not run here are listed
        out, experiments(), title=f"skiplab results ({described})",
        intro=f"Generated {time.strftime('%Y-%m-%d %H:%M')} on {machine_label()} from the saved results in this "
              "folder; the page with figures and tables is index.html."))
    write_json(out / "manifest.json", build_manifest(
        kind="report", config={"quick": setting == "quick", "setting": setting, "reuse": reuse,
                             "experiments": [s.name for s in specs]},
        device="cpu", wall_time_s=wall,
        extra={"sections": [{"experiment": s.spec.name, "reused": s.reused, "error": s.error,
                             "wall_time_s": getattr(s.result, "wall_time_s", None),
                             "claims": {c.key: c.held for c in getattr(s.result, "claims", [])}} for s in sections]},
    ))
    return index
