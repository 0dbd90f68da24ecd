"""The training recipes that several tools share, each a typed, named object written once.

- :data:`RESULTS`: the results table's recipe (every row of ``python -m crm_core.experiments.results``, the
  recipe sweeps' candidates, and, shortened, the dashboard's demo set): resnet18 from scratch,
  112 px, output stride 16 (7x7 CAMs), cosine decay.
- :data:`CRM`: what "CRM" adds to it in every CRM row and in the demo's CRM model.
- :data:`EFFICIENTNET_LENGTH`: how long the table's EfficientNet-b0 rows train.

Each is a frozen dataclass of ``TrainConfig`` field names; :meth:`fields` gives them as the dict a
``TrainConfig`` (or a JSON report) takes. A row or a candidate changes only what it names on top.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


class _Fields:
    def fields(self) -> dict[str, Any]:
        """The recipe as TrainConfig keyword arguments (and as a JSON report records it)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Recipe(_Fields):
    """The TrainConfig fields a family of runs shares (the step count is the table's ``--steps``)."""

    dataset: str = "synthetic"
    arch: str = "resnet18"
    image_size: int = 112
    output_stride: int = 16
    num_classes: int = 4
    batch_size: int = 16
    epochs: int = 2
    cls_lr: float = 1e-3
    rec_lr: float = 2e-3
    lr_schedule: str = "cosine"
    align_warmup: int = 1
    workers: int = 1
    val_limit: int = 100
    diag_every: int = 25

    @property
    def cam_size(self) -> int:
        """The side of the CAM grid (image size / output stride)."""
        return self.image_size // self.output_stride


@dataclass(frozen=True)
class CrmRecipe(_Fields):
    """The CRM settings a CRM row adds to its recipe."""

    crm: bool = True
    l1_weight: float = 30.0
    crm_gate: bool = True


@dataclass(frozen=True)
class TrainingLength(_Fields):
    """How long a backbone trains when the shared length does not train it."""

    steps: int
    epochs: int


RESULTS = Recipe()
#: The table's default step count (``--steps``): 200 steps of batch 16, two epochs of 1600 images.
DEFAULT_STEPS = 200
# The reconstruction L1 weighted x30 (at weight 1 its gradient on the CAM features is ~1e-2 of
# CE's), gated by the reconstruction's specificity so that it does nothing where the decoder
# cannot use the CAM (docs/results.md says how it was chosen). The perceptual term is off unless
# ImageNet VGG19 weights are cached.
CRM = CrmRecipe()
# EfficientNet-b0 trains twice as long (4 epochs of 100 steps): under resnet18's 200 steps it stops
# near 0.85 accuracy. Chosen on val seeds 10-12 by ``python -m crm_core.experiments.recipe_sweep --study
# efficientnet_recipe`` (docs/sweep_efficientnet_recipe.json), with test accuracy >= 0.98 as its bar.
EFFICIENTNET_LENGTH = TrainingLength(steps=400, epochs=4)
