"""Event functions of the dashboard: plain functions of (engine, UI values) -> UI values.

One module per tab, mirroring :mod:`demo.tabs` (compare, browse, drs, superpixels,
reconstructions, runs, results, finetune, stage2), plus :mod:`~demo.callbacks.common` (user-facing
errors, input validation, the image a view works on) and :mod:`~demo.callbacks.menus` (the
checkpoint and run menus every tab shares). Every function takes the engine first, typed as
:class:`demo.protocol.DashboardEngine`, and only translates: it validates the UI's values, calls
the engine's services (``engine.<service>.<method>``), and turns what comes back into pictures (:mod:`demo.render`), figures
(:mod:`demo.plots`), tables and text. Nothing here builds a model or computes on CAMs; ``crm_core``
is reached only through ``crm_core.api`` (``tests/test_layering.py``).

The names below are re-exported so that ``from demo import callbacks as cb; cb.compare(...)``
serves the tabs and the tests.
"""
from __future__ import annotations

from demo.callbacks.browse import BROWSE_ORDERS, browse, open_in_compare
from demo.callbacks.common import (DEFAULT_THRESHOLD, MAX_BROWSE, PREDICTED, USER_ERRORS, explained_class,
                                   resolve_source, user_errors)
from demo.callbacks.compare import class_view, compare, current_picture, load_sample, sample_gallery, startup
from demo.callbacks.drs import CURVE_COLUMNS, CURVE_DELTAS, STRIP_DELTAS, drs_curve, drs_model_info, drs_strip, drs_view
from demo.callbacks.finetune import (MAX_STEPS, base_defaults, fine_tune, fine_tune_request, select_new_run,
                                     stop_training, suggest_name)
from demo.callbacks.menus import (NO_BASE, PREFERRED_B, checkpoint_choices, checkpoints_markdown, default_drs,
                                  default_pair, refresh_checkpoints)
from demo.callbacks.reconstructions import RECON_COLUMNS, reconstructions
from demo.callbacks.results import (APPEARANCES, METRIC_NOTES, RESULT_COLUMNS, RESULT_METRICS, SEGMENTATION_COLUMN,
                                    comparisons_markdown, results_evaluate, results_plot, results_table,
                                    results_view)
from demo.callbacks.runs import runs_csv, runs_table, runs_view
from demo.callbacks.stage2 import (CUTS, NO_STAGE2, default_network, network_defaults, stage2_choices, stage2_menu,
                                   stage2_request, stage2_train, stage2_view)
from demo.callbacks.superpixels import superpixel_view

__all__ = [
    # shared
    "DEFAULT_THRESHOLD", "MAX_BROWSE", "PREDICTED", "USER_ERRORS", "explained_class", "resolve_source", "user_errors",
    "NO_BASE", "PREFERRED_B", "checkpoint_choices", "checkpoints_markdown", "default_drs", "default_pair",
    "refresh_checkpoints",
    # tabs, in layout order
    "class_view", "compare", "current_picture", "load_sample", "sample_gallery", "startup",
    "BROWSE_ORDERS", "browse", "open_in_compare",
    "CURVE_COLUMNS", "CURVE_DELTAS", "STRIP_DELTAS", "drs_curve", "drs_model_info", "drs_strip", "drs_view",
    "superpixel_view",
    "RECON_COLUMNS", "reconstructions",
    "runs_csv", "runs_table", "runs_view",
    "APPEARANCES", "METRIC_NOTES", "RESULT_COLUMNS", "RESULT_METRICS", "SEGMENTATION_COLUMN", "comparisons_markdown",
    "results_evaluate", "results_plot", "results_table", "results_view",
    "MAX_STEPS", "base_defaults", "fine_tune", "fine_tune_request", "select_new_run", "stop_training", "suggest_name",
    "CUTS", "NO_STAGE2", "default_network", "network_defaults", "stage2_choices", "stage2_menu", "stage2_request",
    "stage2_train", "stage2_view",
]
