"""How much can knowing where the object is help a reconstruction? (CRM's premise, measured.)

    python -m crm_core.experiments.oracle                         # both synthetic appearances
    python -m crm_core.experiments.oracle --appearance informative --train-images 400

It also prints what colour alone segments (:func:`colour_cues`): the image's brightness used as
the CAM, and a per-pixel colour classifier fitted on the training masks, both scored like a CAM
(threshold chosen on val, mIoU on test). A benchmark earns its place only if that cue does not
solve it alone: on ``informative`` data it nearly does, on ``camouflage`` it does not.

CRM can only push a CAM toward the whole object if knowing *where the object is* helps
predict the image. This measures that without training anything, with two decoders fitted on
training images and scored on test images by the L1 that ReconstructNet is trained with
(images in [-1, 1]):

- **constant**: the best image that ignores its input -- the per-pixel median of the training
  images (the L1-optimal constant). A ReconstructNet that ignores its CAM learns about this.
- **oracle**: knows the exact part map (background / body / head) of the test image and
  predicts each pixel by the per-pixel median of the training pixels with the same part
  label there (the part's global median where a position never had that part).

The **oracle gain** = 1 - L1(oracle) / L1(constant). Near 0: the object's location carries no
information about its pixels, so no reconstruction loss can reward a CAM for covering it.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Any

import numpy as np
from tqdm import tqdm

from crm_core.data.synthetic import APPEARANCES, SyntheticPets

log = logging.getLogger("crm_core.experiments.oracle")

PARTS = (0, 1, 2)  # background, body, head


def _stack(dataset: SyntheticPets, count: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) float32 images in [-1, 1] and (N, H, W) uint8 part maps."""
    images, parts = [], []
    for index in tqdm(range(count), desc=desc, unit="image", leave=False):
        image, part, _ = dataset.render(index)
        images.append(image.astype(np.float32) / 127.5 - 1.0)
        parts.append(part)
    return np.stack(images), np.stack(parts)


def fit_decoders(images: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The constant decoder (H, W, 3) and the oracle's per-part tables (3, H, W, 3)."""
    constant = np.median(images, axis=0)
    table = np.empty((len(PARTS), *images.shape[1:]), dtype=np.float32)
    for p in PARTS:
        inside = (parts == p)[..., None]  # (N, H, W, 1)
        masked = np.where(inside, images, np.nan)
        global_median = np.nanmedian(images[parts == p], axis=0) if inside.any() else np.median(images, axis=(0, 1, 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN positions: filled below
            per_pixel = np.nanmedian(masked, axis=0)
        table[p] = np.where(np.isnan(per_pixel), global_median, per_pixel)
    return constant, table


def oracle_gain(appearance: str, *, train_images: int = 400, test_images: int = 200, image_size: int = 112,
                num_classes: int = 4, seed: int = 0) -> dict[str, Any]:
    """Fit both decoders on ``train_images`` and score them on ``test_images``."""
    common = dict(image_size=image_size, num_classes=num_classes, seed=seed, appearance=appearance)
    train = SyntheticPets("train", length=train_images, **common)
    test = SyntheticPets("test", length=test_images, **common)
    images, parts = _stack(train, train_images, f"{appearance} train")
    constant, table = fit_decoders(images, parts)
    test_images_arr, test_parts = _stack(test, test_images, f"{appearance} test")
    rows, cols = np.indices(test_parts.shape[1:])
    oracle_pred = table[test_parts, rows[None], cols[None]]  # (N, H, W, 3)
    l1_constant = float(np.abs(test_images_arr - constant[None]).mean())
    l1_oracle = float(np.abs(test_images_arr - oracle_pred).mean())
    return {"appearance": appearance, "l1_constant": l1_constant, "l1_oracle": l1_oracle,
            "oracle_gain": 1.0 - l1_oracle / l1_constant, "train_images": train_images, "test_images": test_images,
            "image_size": image_size, "seed": seed}


def colour_cues(appearance: str, *, train_images: int = 400, test_images: int = 200, val_images: int = 100,
                image_size: int = 112, num_classes: int = 4, seed: int = 0, cam_size: int = 7) -> dict[str, Any]:
    """What colour alone segments, with the results protocol (threshold chosen on val, scored on
    test): the image's brightness as the CAM, and a per-pixel colour classifier fitted on the
    training masks (:mod:`crm_core.experiments.baselines`). CRM's premise needs the oracle gain; a benchmark
    where these score near the untrained floor keeps colour from doing CRM's work."""
    from crm_core.experiments.baselines import score_baseline

    common = dict(image_size=image_size, num_classes=num_classes, seed=seed, appearance=appearance)
    splits = {name: SyntheticPets(name, length=length, **common)
              for name, length in (("train", train_images), ("val", val_images), ("test", test_images))}
    return {name: score_baseline(name, train=splits["train"], val=splits["val"], test=splits["test"],
                                 cam_size=cam_size, val_limit=val_images, test_limit=test_images,
                                 colour_images=train_images)
            for name in ("intensity", "colour")}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Oracle gain: how much knowing the object mask helps reconstruction.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--appearance", nargs="+", default=list(APPEARANCES), choices=APPEARANCES,
                   help="synthetic data appearances to measure")
    p.add_argument("--train-images", type=int, default=400, help="training images the decoders are fitted on")
    p.add_argument("--test-images", type=int, default=200, help="test images they are scored on")
    p.add_argument("--image-size", type=int, default=112, help="image side, px")
    p.add_argument("--num-classes", type=int, default=4, help="synthetic classes")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    p.add_argument("--output-stride", type=int, default=16, help="CAM stride the colour cues are compared at")
    return p


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    if min(args.train_images, args.test_images) < 1:
        log.error("--train-images and --test-images must be >= 1")
        return 2
    print("| appearance | L1 constant image | L1 oracle (knows the part map) | oracle gain "
          "| brightness as the CAM: mIoU | colour classifier: mIoU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for appearance in args.appearance:
        r = oracle_gain(appearance, train_images=args.train_images, test_images=args.test_images,
                        image_size=args.image_size, num_classes=args.num_classes, seed=args.seed)
        cues = colour_cues(appearance, train_images=args.train_images, test_images=args.test_images,
                           image_size=args.image_size, num_classes=args.num_classes, seed=args.seed,
                           cam_size=args.image_size // args.output_stride)
        print(f"| {appearance} | {r['l1_constant']:.4f} | {r['l1_oracle']:.4f} | {r['oracle_gain']:.1%} "
              f"| {cues['intensity']['miou']:.3f} | {cues['colour']['miou']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
