"""RESULTS.md: one row per claim — the paper's figure, our numbers, held or not, the command — from the saved results
of a report folder (no recomputation).  Verdicts and numbers are the Results' own; nothing here softens them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from skiplab.experiments.base import ExperimentSpec
from skiplab.io import read_json
from skiplab.report.artifacts import load_result
from skiplab.report.html import budget


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_markdown(out_dir: Path | str, specs: Sequence[ExperimentSpec], *, title: str = "Results",
                     intro: str = "", link_base: str = "") -> str:
    """A markdown page of every claim of the experiments saved under ``out_dir/<name>/`` (missing ones are listed
    as not run yet, with the command that runs them).  ``link_base``: prefix of the links to the experiments'
    folders (the page's own folder is ``out_dir`` when empty)."""
    out = Path(out_dir)
    lines = [f"# {title}", ""] + ([intro, ""] if intro else [])
    lines += ["| experiment | paper | claim | ours (measured) | verdict | command |", "|---|---|---|---|---|---|"]
    missing = []
    for spec in specs:
        folder = out / spec.name
        result = load_result(spec, folder)
        if result is None:
            missing.append(spec)
            continue
        manifest = read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
        command = manifest.get("rerun", f"skiplab experiment {spec.name}")
        wall = getattr(result, "wall_time_s", None)
        timing = (f" Ran in {wall / 60:.1f} min" if isinstance(wall, (int, float)) else "") + budget(result) + "."
        for claim in getattr(result, "claims", []):
            verdict = "**held**" if claim.held else "**did not hold**"
            lines.append(f"| [{_cell(spec.title)}]({link_base}{spec.name}/) | {_cell(spec.citation)} | {_cell(claim.statement)} | "
                         f"{_cell(claim.evidence)}{_cell(timing)} | {verdict} | `{_cell(command)}` |")
    if missing:
        lines += ["", "Not run yet in this folder (run them to fill the rows):", ""]
        lines += [f"- {s.title}: `skiplab experiment {s.name} --setting cifar --out {out / s.name}`"
                  + ("" if s.has_setting("cifar") else " (no real-data variant: runs its full setting)")
                  for s in missing]
    return "\n".join(lines) + "\n"
