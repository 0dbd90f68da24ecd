"""crm_core.thresholds is the one owner of the threshold defaults.

The band moves to a CAM's own threshold keeping its proportion, and no module of crm_core, demo or
app.py writes a threshold default of its own: the source (AST) is searched for float literals in
the places a threshold default goes (parameters, fields, keywords and variables named low / high /
threshold / band, the ``default=`` of ``--low`` / ``--high`` / ``--threshold``, ``.get("low",
...)`` fallbacks, "threshold 0.3" in a label). Other 0.2s, 0.3s and 0.45s (dropout rates, DRS
deltas, colours, alpha blending) are not threshold defaults and stay where they are.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from crm_core.thresholds import THRESHOLDS, ThresholdPolicy

ROOT = Path(__file__).resolve().parent.parent
OWNER = ROOT / "crm_core" / "thresholds.py"
# A name that holds a threshold: low, high, sp_low, s2_high, threshold, val_threshold, browse_thr,
# DEFAULT_THRESHOLD, DEFAULT_THRESHOLDS, band, ...
THRESHOLD_NAME = re.compile(r"(^|_)(low|high|thr|thresholds?|band)$", re.I)
OPTION = re.compile(r"^--(low|high|threshold)$")
KEY = re.compile(r"^(low|high|threshold)$")  # a record's key (not "thresholds": an older job's grid)
LABEL = re.compile(r"\bthreshold\s+0?\.\d")


def _floats(node: ast.AST | None) -> list[float]:
    """The float literals strictly inside (0, 1) in ``node``'s subtree (bounds 0.0 / 1.0 are ranges)."""
    if node is None:
        return []
    return [n.value for n in ast.walk(node)
            if isinstance(n, ast.Constant) and isinstance(n.value, float) and 0.0 < n.value < 1.0]


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _named(target: ast.AST) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    return None


def threshold_literals(source: str) -> list[tuple[int, str]]:
    """(line, what) of every float literal ``source`` uses as a threshold default."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []

    def flag(node: ast.AST | None, what: str) -> None:
        found.extend((node.lineno, f"{what} = {value}") for value in _floats(node))

    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                if THRESHOLD_NAME.search(arg.arg):
                    flag(default, f"parameter {arg.arg}")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for name in filter(None, map(_named, targets)):
                if THRESHOLD_NAME.search(name):
                    value = node.value
                    if isinstance(value, ast.Call):  # a widget: only its initial value
                        for keyword in value.keywords:
                            if keyword.arg in ("value", "default"):
                                flag(keyword.value, f"{name} (its {keyword.arg})")
                    else:
                        flag(value, name)
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg and THRESHOLD_NAME.search(keyword.arg):
                    flag(keyword.value, f"keyword {keyword.arg}")
            func = node.func
            first = node.args[0] if node.args and isinstance(node.args[0], ast.Constant) else None
            if isinstance(func, ast.Attribute) and first is not None and isinstance(first.value, str):
                if func.attr == "add_argument" and OPTION.match(first.value):
                    for keyword in node.keywords:
                        if keyword.arg == "default":
                            flag(keyword.value, f"option {first.value}")
                elif func.attr == "get" and KEY.match(first.value) and len(node.args) > 1:
                    flag(node.args[1], f".get({first.value!r})")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and LABEL.search(node.value)):
            found.append((node.lineno, f"text {node.value!r}"))
    return sorted(set(found))


def _sources() -> list[Path]:
    return sorted((ROOT / "crm_core").rglob("*.py")) + sorted((ROOT / "demo").rglob("*.py")) + [ROOT / "app.py"]


def test_no_threshold_default_is_written_outside_its_owner() -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: {what}"
           for path in _sources() if path != OWNER
           for line, what in threshold_literals(path.read_text(encoding="utf-8"))]
    assert not bad, "read these from crm_core.thresholds.THRESHOLDS (crm_core.api in the UI):\n" + "\n".join(bad)


@pytest.mark.parametrize("source", [
    "def pseudo_trimap(cam, low: float = 0.2, high=0.45): ...",
    "def band(t, *, threshold=0.3): ...",
    "@dataclass\nclass EvalConfig:\n    threshold: float = 0.3\n",
    "p.add_argument('--high', type=float, default=0.45, help='CAM at or above this: foreground')",
    "p.add_argument('--threshold', type=float, default=0.3)",
    "f(low=request.low if t is None else 0.2)",
    "low = options.get('low', 0.2)",
    "sp_low = gr.Slider(0.0, 1.0, value=0.2, step=0.05)",
    "s2_high = gr.Slider(0.0, 1.0, value=round(info.get('high') or 0.45, 2), step=0.01)",
    "DEFAULT_THRESHOLD = 0.5",
    "DEFAULT_THRESHOLDS = tuple(round(i / 100, 2) for i in range(99)) + (0.991,)",
    "label = ('miou_fixed', 'CAM mIoU (threshold 0.3)')",
])
def test_the_search_finds_a_threshold_default(source: str) -> None:
    """A check that cannot fail is no check: each way a threshold default was once written is found."""
    assert threshold_literals(source), source


@pytest.mark.parametrize("source", [
    "Backbone('efficientnet', 'efficientnet_b2', 'EfficientNet_B2_Weights.IMAGENET1K_V1', 0.3)",  # dropout
    "Row('d03', 'resnet_drs delta 0.3', 'ablation', 'informative', 'resnet_drs', False, {'delta': '0.3'})",
    "SSC = {'align_confident': 0.3, 'align_erosion': 8}",  # SSC's alignment target
    "out[fg] = 0.55 * base[fg] + 0.45 * FG_COLOUR",  # alpha blending
    "APPEARANCE = {'body': (0.65, 0.95), 'background': (0.05, 0.45)}",  # colours
    "model.cam(image, drs_delta=0.3)",
    "threshold = gr.Slider(0.0, 1.0, value=THRESHOLDS.view, step=0.05, label='Pseudo-mask threshold')",
    "def f():\n    '''Cut at threshold 0.3 (a docstring may say what a default is).'''\n",
])
def test_the_search_leaves_other_numbers_alone(source: str) -> None:
    assert not threshold_literals(source), source


def test_the_owner_holds_the_defaults_and_is_frozen() -> None:
    assert (THRESHOLDS.low, THRESHOLDS.high, THRESHOLDS.fixed, THRESHOLDS.view) == (0.2, 0.45, 0.3, 0.5)
    grid = THRESHOLDS.grid
    assert (grid[0], grid[98], grid[-1], len(grid)) == (0.0, 0.98, 0.999, 109) and list(grid) == sorted(set(grid))
    assert THRESHOLDS.fixed in grid
    with pytest.raises(dataclasses.FrozenInstanceError):
        THRESHOLDS.low = 0.1  # type: ignore[misc]


def test_band_at_moves_the_trimap_band_to_a_cams_own_threshold() -> None:
    assert THRESHOLDS.band_at(0.9) == (pytest.approx(0.4), 0.9)  # 0.2 / 0.45 keeps its proportion below the cut
    assert THRESHOLDS.band_at(0.45) == (pytest.approx(0.2), 0.45)
    assert THRESHOLDS.band_at(0.6, low=0.6, high=0.6) == (pytest.approx(0.6), 0.6)  # a binary cut stays binary
    assert ThresholdPolicy(low=0.1, high=0.5).band_at(0.25) == (pytest.approx(0.05), 0.25)
    for bad in (dict(threshold=1.5), dict(threshold=0.5, low=0.5, high=0.3), dict(threshold=0.5, high=0.0)):
        with pytest.raises(ValueError):
            THRESHOLDS.band_at(**bad)
