"""Section 8: what the field's extra CAM metrics cost an evaluation, per image.

``crm_core.evaluate`` scores every CAM by mIoU over the threshold grid, PxAP (from the same
counts: free) and its faithfulness (one more forward pass, on the map times the image); the
results table adds the maps from no model judged by the same classifier (three more forward
passes and curves); ``--faithfulness full`` adds RISE's deletion and insertion curves (2 x 21
forward passes). Timed side by side on the same images and model.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

from crm_core.timing import time_interleaved


def bench_evaluation(image_size: int = 112, images: int = 32, batch_size: int = 16, repeats: int = 3,
                     arch: str = "resnet18") -> dict[str, Any]:
    """Per-image seconds of ``evaluate_model`` without faithfulness (mIoU curve and PxAP), with it,
    and with the references, on an untrained checkpoint of the results recipe (timing does not
    depend on the weights)."""
    from crm_core.evaluate import evaluate_model
    from crm_core.experiments.baselines import FAITHFULNESS_REFERENCES
    from crm_core.explain import CamModel, dataset_for
    from crm_core.metrics import DELETION_STEPS
    from crm_core.train import TrainConfig, main as train_main

    os.environ.setdefault("CRM_LAB_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory(prefix="crm_bench_eval_") as tmp:
        path = train_main(TrainConfig(name="bench_eval", arch=arch, image_size=image_size, steps=0, epochs=1,
                                      train_size=batch_size, batch_size=batch_size, val_limit=1, workers=0, checkpoint_dir=tmp,
                                      runs_dir=tmp))
        model = CamModel.load(path)
        test = dataset_for(model, "test")

        def run(**options: Any) -> None:
            evaluate_model(model, test, limit=images, batch_size=batch_size, progress=False, reconstruction=False,
                           **options)

        stats = time_interleaved({
            "miou_and_pxap": lambda: run(faithfulness=False),
            "with_faithfulness": lambda: run(faithfulness=True),
            "with_references": lambda: run(faithfulness=True, references=FAITHFULNESS_REFERENCES),
            "with_deletion_insertion": lambda: run(faithfulness=True, deletion_steps=DELETION_STEPS),
        }, repeats)
    per_image = {name: s.median / images for name, s in stats.items()}
    return {"arch": arch, "image_size": image_size, "images": images, "batch_size": batch_size,
            "seconds": {name: s.as_dict() for name, s in stats.items()}, "per_image_s": per_image,
            "faithfulness_ratio": per_image["with_faithfulness"] / per_image["miou_and_pxap"],
            "references_ratio": per_image["with_references"] / per_image["miou_and_pxap"],
            "deletion_insertion_ratio": per_image["with_deletion_insertion"] / per_image["miou_and_pxap"]}
