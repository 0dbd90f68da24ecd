"""The results-table driver: every row trained with one recipe, the exact-preset row, --reuse."""
from __future__ import annotations

import os
from pathlib import Path

from crm_core import results


def test_results_rows_table_and_reuse(tmp_path: Path) -> None:
    os.environ["CRM_LAB_NO_PROGRESS"] = "1"
    common = dict(steps=1, test_limit=4, checkpoint_dir=str(tmp_path / "ck"), runs_dir=str(tmp_path / "runs"),
                  train_size=32, extra={})
    rows = results.run(**common, exact_row=True)
    assert [r["name"] for r in rows] == ["results_resnet", "results_resnet_crm", "results_resnet_drs",
                                         "results_resnet_drs_crm", "results_resnet_drs_crm_exact"]
    assert [r["crm_preset"] for r in rows] == [None, "fast", None, "fast", "exact"]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["miou_best"] <= 1.0 and r["miou_best"] >= r["miou_fixed"] - 1e-9
        assert (tmp_path / "runs" / r["name"] / "eval.json").is_file()
    table = results.markdown(rows, "python -m crm_core.results --steps 1")
    assert "| resnet_drs | yes (exact) |" in table and "| resnet | no |" in table
    assert "plus" in table and "exact-preset row" in table

    # --reuse keeps checkpoints already trained to the requested steps (no retraining).
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ck").glob("*.pt")}
    again = results.run(**common, reuse=True)
    assert len(again) == 4
    assert all((tmp_path / "ck" / p).stat().st_mtime_ns == t for p, t in stamps.items())
