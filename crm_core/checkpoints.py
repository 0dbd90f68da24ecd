"""Self-describing checkpoints, loaded safely, written atomically.

A checkpoint is a plain dict of tensors and primitives, so it loads with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is refused
instead of executed. It holds the resolved model config, class names and preprocessing,
so :func:`load_checkpoint` rebuilds the model with nothing else (nanoGPT's ``model_args``).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from crm_core.atomic import atomic_save
from crm_core.models import CamClassifier, ModelConfig, ReconstructNet, create_model
from crm_core.models.segmentation import SEG_ARCHS, SegmentationNet


FORMAT = "crm-lab-checkpoint"
VERSION = 1
# What a checkpoint holds ("kind"): a CAM classifier (files written before the key have none) or a
# stage-2 segmentation network (crm_core.segment). Each loader refuses the other kind with the reason.
CAM_KIND, SEGMENTATION_KIND = "cam", "segmentation"


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class CheckpointSummary:
    """What a checkpoint is, read from its file without building its modules (:func:`inspect_checkpoint`).

    Menus and descriptions need only this: building a ResNet imports torchvision and allocates
    the weights, which a dashboard listing a folder of checkpoints at start-up should not pay.
    """
    name: str
    model_config: ModelConfig
    train_config: dict[str, Any]
    class_names: list[str]
    image_size: int
    dataset: str
    step: int
    weights_source: str
    has_reconstructor: bool

    @property
    def multi_label(self) -> bool:
        """Trained on several classes per image (multi-label soft-margin loss): several objects
        of synthetic data, or a multi-label dataset such as VOC."""
        from crm_core.data import DATASETS  # lazy: listing checkpoints needs no dataset code

        dataset = DATASETS.get(self.dataset)
        return int(self.train_config.get("max_objects", 1)) > 1 or bool(getattr(dataset, "multi_label", False))

    def describe(self) -> str:
        """One line a person can read: what this checkpoint is."""
        cfg, train = self.model_config, self.train_config
        crm = "CRM" if self.has_reconstructor else "no CRM"
        drs = f"DRS delta={'learnable' if cfg.drs_learnable else cfg.drs_delta}" if cfg.drs else "no DRS"
        extra = train.get("extra")
        owner = extra.get("owner") if isinstance(extra, dict) else None  # the dashboard login that trained it
        return (f"{self.name}: {cfg.variant} ({cfg.arch}, {drs}, {crm}), {self.dataset} "
                f"{self.image_size}px, {len(self.class_names)} classes, step {self.step}, "
                f"weights {self.weights_source}, lr {train.get('cls_lr', '?')}"
                + (f", owner {owner}" if owner else ""))


@dataclass(frozen=True)
class Checkpoint(CheckpointSummary):
    """What a checkpoint file holds, rebuilt into live modules."""

    path: Path
    classifier: CamClassifier
    reconstructor: ReconstructNet | None
    epoch: int
    epoch_step: int
    optimizers: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> CheckpointSummary:
        """The summary alone: it keeps no reference to the modules (an engine may hold it longer)."""
        return CheckpointSummary(**{f.name: getattr(self, f.name) for f in fields(CheckpointSummary)})


def save_checkpoint(
    path: str | Path,
    *,
    classifier: CamClassifier,
    reconstructor: ReconstructNet | None,
    train_config: dict[str, Any],
    image_size: int,
    dataset: str,
    step: int,
    epoch: int,
    epoch_step: int = 0,
    optimizers: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (temp file + rename)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": CAM_KIND,
        "model_config": classifier.cfg.to_dict(),
        "train_config": dict(train_config),
        "class_names": list(classifier.cfg.class_names),
        "image_size": int(image_size),
        "dataset": dataset,
        "weights_source": classifier.weights_source,
        "classifier": classifier.state_dict(),
        "reconstructor": None if reconstructor is None else reconstructor.state_dict(),
        "reconstructor_config": None if reconstructor is None else {
            "num_classes": classifier.cfg.num_classes,
            "image_size": reconstructor.image_size,
            "cam_size": reconstructor.cam_size,
        },
        "optimizers": optimizers or {},
        "step": int(step),
        "epoch": int(epoch),
        "epoch_step": int(epoch_step),
        "metrics": metrics or {},
        "extra": extra or {},
    }
    atomic_save(path, lambda buffer: torch.save(payload, buffer))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False,
                    cam_kind: bool = True) -> dict[str, Any]:
    """Load the raw dict with ``weights_only=True`` and check it is one of ours.

    ``mmap``: map the tensors' storage instead of reading it (for a look at the config alone).
    ``cam_kind``: also check that it is a CAM classifier's (a stage-2 segmentation checkpoint is
    refused with the reason); False checks the format and version only.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(str(exc))
        if "global" in reason.lower():
            # weights_only refuses any global it does not know: a pickle that wants to run code.
            raise CheckpointError(
                f"{path}: refused — the file contains Python objects that could execute code when loaded "
                f"(only plain tensors and values are accepted): {reason}"
            ) from exc
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {reason}") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types on damaged files; all mean the same here
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {type(exc).__name__}: {first}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a CRM Lab checkpoint (missing format tag {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})")
    if not cam_kind:
        return payload
    kind = payload.get("kind", CAM_KIND)
    if kind == SEGMENTATION_KIND:
        raise CheckpointError(f"{path}: a stage-2 segmentation network (python -m crm_core.segment), "
                              "not a CAM classifier: it has no CAMs to explain or evaluate")
    if kind != CAM_KIND:
        raise CheckpointError(f"{path}: unknown checkpoint kind {kind!r} (expected {CAM_KIND!r})")
    for key in ("model_config", "classifier", "image_size", "class_names"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint is missing {key!r}")
    return payload


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", optimizers: bool = True) -> Checkpoint:
    """Rebuild classifier (+ReconstructNet) from a checkpoint file alone.

    ``optimizers=False`` leaves the optimizer state out (``Checkpoint.optimizers`` is empty) and
    never reads it: Adam's moments are twice the weights, which a model that only explains
    (:class:`crm_core.explain.CamModel`) would otherwise keep in memory for as long as it lives.
    """
    path = Path(path)
    # Mapped, not read, when the optimizer state is left out: its tensors are then never paged in,
    # and the weights are copied into the modules below.
    payload = read_checkpoint(path, map_location, mmap=not optimizers)
    model_config = _model_config(path, payload)
    try:
        classifier = create_model(model_config, load_pretrained=False)
    except ValueError as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc
    _load_state(path, "classifier", classifier, payload["classifier"])
    classifier.weights_source = payload.get("weights_source", "unknown")
    reconstructor = None
    if payload.get("reconstructor") is not None:
        rc = payload.get("reconstructor_config") or {}
        try:
            reconstructor = ReconstructNet(rc["num_classes"], rc["image_size"], rc["cam_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: invalid reconstructor config {rc}: {exc}") from exc
        _load_state(path, "reconstructor", reconstructor, payload["reconstructor"])
    classifier.eval()
    if reconstructor is not None:
        reconstructor.eval()
    return Checkpoint(
        **_summary_fields(path, payload, classifier.cfg), path=path, classifier=classifier, reconstructor=reconstructor,
        epoch=int(payload.get("epoch", 0)), epoch_step=int(payload.get("epoch_step", 0)),
        optimizers=payload.get("optimizers", {}) if optimizers else {}, metrics=payload.get("metrics", {}), extra=payload.get("extra", {}),
    )


def inspect_checkpoint(path: str | Path) -> CheckpointSummary:
    """The :class:`CheckpointSummary` of a file: read safely (weights_only) with the tensors
    memory-mapped, config checked, no module built. A file this accepts can still fail
    :func:`load_checkpoint` when its weights do not fit the architecture in its config."""
    path = Path(path)
    payload = read_checkpoint(path, "cpu", mmap=True)
    return CheckpointSummary(**_summary_fields(path, payload, _model_config(path, payload)))


def _summary_fields(path: Path, payload: dict[str, Any], model_config: ModelConfig) -> dict[str, Any]:
    """The :class:`CheckpointSummary` fields of a checked payload."""
    return dict(name=path.stem, model_config=model_config, train_config=payload.get("train_config", {}),
                class_names=list(payload["class_names"]), image_size=int(payload["image_size"]),
                dataset=payload.get("dataset", "unknown"), step=int(payload.get("step", 0)),
                weights_source=payload.get("weights_source", "unknown"),
                has_reconstructor=payload.get("reconstructor") is not None)


def _model_config(path: Path, payload: dict[str, Any]) -> ModelConfig:
    """The payload's ModelConfig, checked against its class names."""
    try:
        model_config = ModelConfig(**payload["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc
    if len(payload["class_names"]) != model_config.num_classes:
        raise CheckpointError(
            f"{path}: {len(payload['class_names'])} class names for a {model_config.num_classes}-class head"
        )
    return model_config


def _unpickler_reason(message: str) -> str:
    """The informative line of torch's weights-only error (it buries it in a long help text)."""
    for line in message.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    return (message.splitlines() or ["unpickling failed"])[0]


def _load_state(path: Path, what: str, module: torch.nn.Module, state: Any) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: {what} weights are not a state dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: {what} weights do not match the architecture in its config: {first}") from exc


# -- stage-2 segmentation networks (crm_core.segment) ---------------------------------------
@dataclass(frozen=True)
class SegmentationCheckpoint:
    """A stage-2 checkpoint rebuilt: the network, what it was trained on, where training stands."""

    path: Path
    name: str
    arch: str  # a name in crm_core.models.segmentation.SEG_ARCHS
    net: SegmentationNet
    dataset: dict[str, Any]  # the dataset config its masks index (crm_core.explain.dataset_config)
    masks: dict[str, Any]  # where its training masks came from ("gt" or a pseudo-mask folder and its manifest)
    seg_config: dict[str, Any]  # the resolved SegConfig of the run
    weights_source: str
    step: int
    epoch: int
    epoch_step: int
    optimizer: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        source = "ground-truth masks" if self.masks.get("source") == "gt" else f"pseudo masks {self.masks.get('source')}"
        manifest = self.masks.get("manifest") or {}
        if isinstance(manifest.get("low"), (int, float)) and isinstance(manifest.get("high"), (int, float)):
            at_val = " at the CAM's val-chosen threshold" if manifest.get("val_threshold") is not None else ""
            source += f" (object >= {manifest['high']:.2f}, background < {manifest['low']:.2f}{at_val})"
        return (f"{self.name}: stage-2 {self.arch} on {source}, {self.dataset.get('name')} "
                f"{self.dataset.get('image_size')}px, step {self.step}, weights {self.weights_source}")


def save_segmentation_checkpoint(
    path: str | Path, *, net: SegmentationNet, dataset: dict[str, Any], masks: dict[str, Any],
    seg_config: dict[str, Any], weights_source: str, step: int, epoch: int, epoch_step: int = 0,
    optimizer: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
) -> None:
    """Write a stage-2 checkpoint atomically: self-describing, plain values and tensors only."""
    payload = {
        "format": FORMAT, "version": VERSION, "kind": SEGMENTATION_KIND, "arch": net.arch,
        "seg_classes": net.num_classes,
        "model": net.state_dict(), "dataset": dict(dataset), "masks": dict(masks), "seg_config": dict(seg_config),
        "weights_source": weights_source, "step": int(step), "epoch": int(epoch), "epoch_step": int(epoch_step),
        "optimizer": optimizer or {}, "extra": extra or {},
    }
    atomic_save(path, lambda buffer: torch.save(payload, buffer))


def load_segmentation_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                                 optimizer: bool = True) -> SegmentationCheckpoint:
    """Rebuild a stage-2 network from its file alone (weights_only); a CAM checkpoint is refused.
    ``optimizer=False`` leaves the optimizer state out, never read (as :func:`load_checkpoint`)."""
    path = Path(path)
    payload = read_checkpoint(path, map_location, mmap=not optimizer, cam_kind=False)
    kind = payload.get("kind", CAM_KIND)
    if kind != SEGMENTATION_KIND:
        raise CheckpointError(f"{path}: a {kind} classifier checkpoint (python -m crm_core.train), not a stage-2 "
                              "segmentation network: train one with python -m crm_core.segment")
    arch = payload.get("arch")
    if arch not in SEG_ARCHS:
        raise CheckpointError(f"{path}: unknown segmentation arch {arch!r}; known: {sorted(SEG_ARCHS)}")
    for key in ("model", "dataset", "masks"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: segmentation checkpoint is missing {key!r}")
    seg_classes = payload.get("seg_classes", 2)  # files older than multi-label stage 2 have two
    if not isinstance(seg_classes, int) or seg_classes < 2:
        raise CheckpointError(f"{path}: seg_classes must be an integer >= 2, got {seg_classes!r}")
    net = SegmentationNet(arch, seg_classes)
    _load_state(path, "segmentation network", net, payload["model"])
    net.eval()
    return SegmentationCheckpoint(
        path=path, name=path.stem, arch=arch, net=net, dataset=payload["dataset"], masks=payload["masks"],
        seg_config=payload.get("seg_config", {}), weights_source=payload.get("weights_source", "unknown"),
        step=int(payload.get("step", 0)), epoch=int(payload.get("epoch", 0)),
        epoch_step=int(payload.get("epoch_step", 0)), optimizer=payload.get("optimizer", {}) if optimizer else {},
        extra=payload.get("extra", {}),
    )
