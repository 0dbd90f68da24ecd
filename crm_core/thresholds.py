"""Where a CAM is cut: the one place the threshold defaults are written.

:data:`THRESHOLDS` is read by every CLI option, function default and dashboard value that cuts a
CAM: the pseudo-mask band (``low`` / ``high``, crm_core.postprocess and the Stage 2 tab), the
fixed threshold evaluate reports beside the val-chosen one (``fixed``), the grid that threshold is
chosen on (``grid``), the dashboard's first slider value (``view``), and how the band moves to a
CAM's own val-chosen threshold (:meth:`ThresholdPolicy.band_at`). A pure module with no imports
from crm_core, so every layer may read it.
"""
from __future__ import annotations

from dataclasses import dataclass

# 0.00 .. 0.99 in steps of 0.01, then 0.991 .. 0.999 in steps of 0.001. A coarser grid that
# stopped at 0.95 clipped models whose best val threshold lies higher (15 of 51 runs of the
# 2026-11 table chose its top); a DRS model at delta 0.3 lights most of the image almost evenly,
# and its val optimum lies between 0.99 and 0.995. Results tables report how many runs chose the
# grid's edge.
_GRID = tuple(round(i / 100, 2) for i in range(99)) + tuple(round(0.99 + i / 1000, 3) for i in range(10))


@dataclass(frozen=True)
class ThresholdPolicy:
    """Threshold defaults for cutting CAMs in [0, 1]."""

    low: float = 0.2  # pseudo-mask band: CAM below this is background
    high: float = 0.45  # pseudo-mask band: CAM at or above this is object (between the two: uncertain)
    fixed: float = 0.3  # the fixed CAM threshold evaluate reports beside the val-chosen one
    grid: tuple[float, ...] = _GRID  # the thresholds a CAM's best (val) threshold is chosen from
    # the dashboard's threshold sliders start here: small demo models' CAMs are broad, and at
    # 0.3 their pseudo mask covers nearly everything
    view: float = 0.5

    def band_at(self, threshold: float, low: float | None = None, high: float | None = None) -> tuple[float, float]:
        """The (low, high) band (default: this policy's) moved so that ``high`` is ``threshold`` (a
        CAM's val-chosen threshold), ``low`` scaled by the same factor: the uncertain band keeps
        its proportion below the cut.

        Fixed thresholds suit no CAM in particular: a CAM whose best val threshold is 0.7 marks much
        background as object at 0.45, and one whose best is 0.3 loses object pixels."""
        low = self.low if low is None else low
        high = self.high if high is None else high
        if not (0.0 < high <= 1.0 and 0.0 <= low <= high):
            raise ValueError(f"thresholds must satisfy 0 <= low <= high <= 1 and high > 0, got low={low}, high={high}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"a CAM threshold is in [0, 1], got {threshold}")
        return low * threshold / high, threshold


#: The defaults every threshold in crm_core, demo and app.py reads.
THRESHOLDS = ThresholdPolicy()
