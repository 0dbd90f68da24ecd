"""The dashboard's readers of what runs wrote: run folders and the results report.

:class:`RunReader` (the engine's ``runs``: a :class:`demo.protocol.RunService`) lists the run
folders (config, metrics rows, eval.json through ``crm_core.runs``); :class:`ResultsReader` (the
engine's ``results``: a :class:`demo.protocol.ResultsService`) reads the report
``python -m crm_core.experiments.results`` wrote (:func:`read_results`, which checks it has the parts the
Results tab reads). Every call reads the files again, so a new run or report shows without a restart.

State: none but each reader's location, fixed at construction. Locks: none, since no call leaves
anything another call reads.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crm_core.runs import RunDir, list_runs
from demo.checkpoint_store import path_in
from demo.protocol import NAME_RE, InvalidName, RunInfo

__all__ = ["REPO_ROOT", "ResultsReader", "RunReader", "read_results"]

#: The repository root: a relative ``results_path`` is taken from here, not from the working dir.
REPO_ROOT = Path(__file__).resolve().parent.parent


def read_results(path: Path) -> dict[str, Any] | None:
    """The report ``python -m crm_core.experiments.results`` wrote at ``path``; None when there is none yet.

    Raises ValueError (a one-line reason naming only the file) when it exists but cannot be read,
    is not JSON, or lacks the parts the Results tab reads (jobs, summary.rows with stats).
    """
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{path.name} cannot be read ({exc.strerror or type(exc).__name__})") from exc
    except ValueError as exc:  # not UTF-8, not JSON
        raise ValueError(f"{path.name} is not valid JSON ({str(exc).splitlines()[0][:120]})") from exc
    summary = report.get("summary") if isinstance(report, dict) else None
    rows = summary.get("rows") if isinstance(summary, dict) else None
    valid = (isinstance(rows, dict) and isinstance(report.get("jobs"), list)
             and isinstance(summary.get("comparisons", []), list)
             and all(isinstance(job, dict) and "row" in job for job in report["jobs"])
             and all(isinstance(row, dict) and isinstance(row.get("stats"), dict)
                     and all(isinstance(s, dict) and "mean" in s for s in row["stats"].values())
                     for row in rows.values()))
    if not valid:
        raise ValueError(f"{path.name} is not a results report (it needs jobs and summary.rows with stats)")
    return report


class RunReader:
    """The run folders in ``runs_dir``."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.runs_dir = Path(runs_dir).resolve()

    def names(self) -> list[str]:
        return [r.name for r in list_runs(self.runs_dir) if NAME_RE.match(r.name)]

    def run(self, name: str) -> RunInfo:
        path = path_in(self.runs_dir, name, "", "run")
        if not path.is_dir():
            raise InvalidName(f"no run named {name!r} in {self.runs_dir.name}/")
        run = RunDir(path)
        return RunInfo(name=name, config=run.read_config(), metrics=run.read_metrics(), eval=run.read_eval())


class ResultsReader:
    """The report at ``results_path`` (relative: from :data:`REPO_ROOT`)."""

    def __init__(self, results_path: str | Path = Path("docs/results.json")) -> None:
        self.results_path = REPO_ROOT / results_path  # an absolute results_path stays as it is

    def report(self) -> dict[str, Any] | None:
        """docs/results.json as written by ``python -m crm_core.experiments.results`` (None: not made yet).

        Read on every call (when the Results tab is selected), so a new report shows without a restart.
        """
        return read_results(self.results_path)

    # The study's own answers (crm_core.experiments), imported on first use: the engine stays light.
    def provenance(self, report: dict[str, Any]) -> dict[str, Any]:
        from crm_core.experiments.results_report import provenance

        return provenance(report)

    def plan_command(self) -> str:
        from crm_core.experiments.results_table import PLAN_COMMAND

        return PLAN_COMMAND

    def group_order(self) -> tuple[str, ...]:
        from crm_core.experiments.results_table import TABLE_ORDER

        return TABLE_ORDER

    def reference_labels(self) -> dict[str, str]:
        from crm_core.experiments.results_table import REFERENCE_LABELS

        return dict(REFERENCE_LABELS)
