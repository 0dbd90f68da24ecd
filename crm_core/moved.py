"""Command-line modules that moved into :mod:`crm_core.experiments`: their old names say where.

``python -m crm_core.results`` (or an import of it) fails with one line that names the new
module instead of a bare "No module named"; nothing is re-exported.
"""
from __future__ import annotations

import sys
from typing import NoReturn

#: old module -> new module
MOVED = {
    "crm_core.results": "crm_core.experiments.results",
    "crm_core.recipe_sweep": "crm_core.experiments.recipe_sweep",
    "crm_core.oracle": "crm_core.experiments.oracle",
    "crm_core.bench": "crm_core.experiments.bench",
}


def tombstone(old: str, run_as_main: bool) -> NoReturn:
    """Stop with the new name of ``old``: exit 1 with one line when run with ``python -m``,
    else ImportError (a package's ``python -m`` prints that error as one line too)."""
    message = f"{old} moved to {MOVED[old]}: run python -m {MOVED[old]}"
    if run_as_main:
        sys.exit(message)
    raise ImportError(message)
