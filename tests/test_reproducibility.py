"""A run repeats itself: the same command, seed and thread count give the same weights and the same
eval.json, bit for bit (the results table's jobs rely on it: a job's recorded command reruns it)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_config

# what differs by design between two runs: where they were written and how long they took
RUN_SPECIFIC_KEYS = {"checkpoint", "eval_s", "wall_time", "checkpoint_mtime_ns", "train_s", "elapsed_s"}


def _strip_timing(value):
    if isinstance(value, dict):
        return {k: _strip_timing(v) for k, v in value.items() if k not in RUN_SPECIFIC_KEYS}
    if isinstance(value, list):
        return [_strip_timing(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _train_and_evaluate(root: Path):
    from crm_core.evaluate import evaluate_protocol
    from crm_core.explain import CamModel
    from crm_core.train import main

    # CRM with alignment from the first step and a DataLoader worker: every path a table job takes
    path = main(tiny_config(root, name="again", model="resnet_drs", crm=True, crm_gate=True, l1_weight=30.0,
                            steps=4, workers=1, align_warmup=0, seed=7))
    model = CamModel.load(path)
    evaluate_protocol(model, limit=8, val_limit=8, runs_dir=root / "runs")
    evaluation = json.loads((root / "runs" / "again" / "eval.json").read_text())
    state = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    return state, evaluation


@pytest.mark.slow
def test_the_same_run_twice_gives_identical_weights_and_eval_json(tmp_path: Path, no_progress: None) -> None:
    first_state, first_eval = _train_and_evaluate(tmp_path / "first")
    second_state, second_eval = _train_and_evaluate(tmp_path / "second")
    assert first_state.keys() == second_state.keys()
    differing = [k for k in first_state if not torch.equal(first_state[k], second_state[k])]
    assert not differing, f"weights differ between two identical runs: {differing[:5]}"
    assert _strip_timing(first_eval) == _strip_timing(second_eval)
    assert torch.backends.mkldnn.deterministic and torch.are_deterministic_algorithms_enabled()
