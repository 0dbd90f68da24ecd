"""What the results table is: its rows (:data:`ROWS`, in groups, on the recipes of
:mod:`crm_core.recipes`), the paired comparisons it reads out, the effect rule (:data:`ALPHA`,
:data:`NEGLIGIBLE`) and the README's plan (:data:`README_PLAN`). :mod:`crm_core.experiments.results` runs
it, :mod:`crm_core.experiments.results_summary` summarises it and :mod:`crm_core.experiments.results_report`
writes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crm_core.data.synthetic import APPEARANCES, data_setting
from crm_core.recipes import CRM, EFFICIENTNET_LENGTH, RESULTS


@dataclass(frozen=True)
class Row:
    key: str  # unique id, also the checkpoint name stem
    label: str  # what the table shows
    group: str  # one of GROUPS
    appearance: str  # random | informative
    model: str  # registered variant
    crm: bool
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields on top of RESULTS (+ CRM)
    untrained: bool = False  # floor: no training step
    baseline: str | None = None  # a map from no model (crm_core.experiments.baselines.BASELINES): nothing is trained
    # stage 2: a segmentation network (SEG_RECIPE) trained on the train-split pseudo masks of this
    # row's CAM model (same seed), or "gt" on the ground truth; model / crm then describe that source
    stage2: str | None = None  # (overrides {"superpixels": True}: its pseudo masks refined with SLIC, postprocess --superpixels)
    max_objects: int = 1  # > 1: up to this many animals of distinct classes per image (multi-label data)

    @property
    def setting(self) -> str:
        """The data a row's table is about: its appearance, with several objects per image marked
        (``informative_m3``); rows of one setting share a table, a floor and a ceiling."""
        return data_setting(self.appearance, self.max_objects)

    def train_fields(self, steps: int, crm_overrides: dict[str, Any]) -> dict[str, Any]:
        values = {**RESULTS.fields(), "model": self.model, "appearance": self.appearance, "crm": self.crm,
                  "max_objects": self.max_objects}
        if self.crm:
            values.update({**CRM.fields(), **crm_overrides})
        values.update(self.overrides)
        values["steps"] = 0 if self.untrained else self.overrides.get("steps", steps)  # a row may fix its own
        return values


def _rows() -> tuple[Row, ...]:
    from crm_core.experiments.baselines import BASELINES

    rows = []
    for appearance in APPEARANCES:
        for baseline in BASELINES.values():
            rows.append(Row(f"{appearance}_{baseline.name}", baseline.label, baseline.kind, appearance, "none", False,
                            baseline=baseline.name))
        for model in ("resnet", "resnet_drs"):
            rows.append(Row(f"{appearance}_{model}_floor", f"{model} untrained (floor)", "floor", appearance, model,
                            False, untrained=True))
            rows.append(Row(f"{appearance}_{model}", model, "main", appearance, model, False))
            rows.append(Row(f"{appearance}_{model}_crm", f"{model} + CRM", "main", appearance, model, True))
    rows += [
        Row("informative_resnet_drs_crm_sscinput", "resnet_drs + CRM, SSC decoder input (raw class scores)", "ablation",
            "informative", "resnet_drs", True, {"decoder_input": "scores"}),
        Row("informative_resnet_drs_crm_sscalign", "resnet_drs + CRM, SSC alignment target (0.3, 8x8 erosion)",
            "ablation", "informative", "resnet_drs", True, {"align_confident": 0.3, "align_erosion": 8}),
        Row("informative_resnet_drs_d03", "resnet_drs delta 0.3", "ablation", "informative", "resnet_drs", False,
            {"delta": "0.3"}),
        Row("informative_resnet_drs_d03_crm", "resnet_drs delta 0.3 + CRM", "ablation", "informative", "resnet_drs",
            True, {"delta": "0.3"}),
        Row("informative_resnet_drs_crm_exact", "resnet_drs + CRM, exact preset (full-size reconstruction)", "preset",
            "informative", "resnet_drs", True, {"crm_preset": "exact"}),
        Row("random_resnet_drs_crm_exact", "resnet_drs + CRM, exact preset", "legacy", "random", "resnet_drs", True,
            {"crm_preset": "exact"}),
    ]
    # The second backbone family, same recipe otherwise (``--groups backbone``): its floor, with and
    # without CRM on the appearance where colour helps and on the one where it does not; DRS on informative.
    # Which of CRM's two terms carries its effect (``--groups mechanism``): CRM with the alignment
    # term off (the gated reconstruction alone), and the alignment term alone (reconstruction L1
    # weight 0) with the gate off, so that the gate -- shut when the decoder learns nothing -- cannot
    # silence it; each paired against plain and full CRM.
    for appearance in ("informative", "camouflage"):
        rows += [Row(f"{appearance}_resnet_crm_noalign", "resnet + CRM, alignment off (reconstruction alone)",
                     "mechanism", appearance, "resnet", True, {"align_weight": 0.0}),
                 Row(f"{appearance}_resnet_alignonly", "resnet + alignment alone (no reconstruction, no gate)",
                     "mechanism", appearance, "resnet", True, {"l1_weight": 0.0, "crm_gate": False})]
    effnet = {"arch": "efficientnet_b0"}
    trained = {**effnet, **EFFICIENTNET_LENGTH.fields()}
    for appearance in ("informative", "camouflage"):
        rows += [Row(f"{appearance}_efficientnet_b0_floor", "efficientnet_b0 untrained (floor)", "backbone", appearance,
                     "resnet", False, effnet, untrained=True),
                 Row(f"{appearance}_efficientnet_b0", "efficientnet_b0", "backbone", appearance, "resnet", False,
                     trained),
                 Row(f"{appearance}_efficientnet_b0_crm", "efficientnet_b0 + CRM", "backbone", appearance, "resnet",
                     True, trained)]
    rows += [Row("informative_efficientnet_b0_drs", "efficientnet_b0 + DRS", "backbone", "informative", "resnet_drs",
                 False, trained),
             Row("informative_efficientnet_b0_drs_crm", "efficientnet_b0 + DRS + CRM", "backbone", "informative",
                 "resnet_drs", True, trained)]
    # Stage 2 (``--groups stage2``): the number WSSS papers report -- a segmentation network trained
    # on the pseudo masks, scored against ground truth -- for the plain CAM and the CAM with CRM
    # (the main table's pair), for CRM's masks refined with superpixels, for the image brightness's
    # masks (the no-model cue, cut at its own val threshold) and for the ground truth (the ceiling).
    # The floor is the better of the two constant masks (all background, all object; chosen on val):
    # an untrained network's random head is a coin flip between them, kept as a row but no floor.
    rows += [Row("informative_stage2_constant", "stage 2 floor: the better constant mask (chosen on val)", "stage2",
                 "informative", "none", False, stage2="constant"),
             Row("informative_stage2_floor", "stage 2 untrained network (a random head: not a floor)", "stage2",
                 "informative", "none", False, untrained=True, stage2="gt"),
             Row("informative_stage2_resnet", "stage 2 on resnet's pseudo masks", "stage2", "informative", "resnet",
                 False, stage2="informative_resnet"),
             Row("informative_stage2_resnet_crm", "stage 2 on resnet + CRM's pseudo masks", "stage2", "informative",
                 "resnet", True, stage2="informative_resnet_crm"),
             Row("informative_stage2_resnet_crm_sp", "stage 2 on resnet + CRM's superpixel-refined pseudo masks",
                 "stage2", "informative", "resnet", True, {"superpixels": True}, stage2="informative_resnet_crm"),
             Row("informative_stage2_intensity", "stage 2 on the image brightness's masks (no model)", "stage2",
                 "informative", "none", False, stage2="informative_intensity"),
             Row("informative_stage2_gt", "stage 2 on ground truth (ceiling)", "stage2", "informative", "none", False,
                 stage2="gt")]
    # Several objects per image (``--max-objects 3``): up to three animals of distinct classes,
    # scored by the multi-class protocol (each image's classes compete with a background score
    # chosen on val; mIoU over background + 4 classes); the same floor, cues, models and ceilings,
    # and stage 2 on informative data. Does CRM's class-agnostic reconstruction blur objects of
    # different classes into each other? The confusion column says.
    for appearance in MULTI_OBJECT_APPEARANCES:
        setting = f"{appearance}_m{MULTI_OBJECTS}"
        for baseline in BASELINES.values():
            rows.append(Row(f"{setting}_{baseline.name}", baseline.label, baseline.kind, appearance, "none", False,
                            baseline=baseline.name, max_objects=MULTI_OBJECTS))
        rows += [Row(f"{setting}_resnet_floor", "resnet untrained (floor)", "floor", appearance, "resnet", False,
                     untrained=True, max_objects=MULTI_OBJECTS),
                 Row(f"{setting}_resnet", "resnet", "main", appearance, "resnet", False, max_objects=MULTI_OBJECTS),
                 Row(f"{setting}_resnet_crm", "resnet + CRM", "main", appearance, "resnet", True,
                     max_objects=MULTI_OBJECTS)]
    setting = f"informative_m{MULTI_OBJECTS}"
    rows += [Row(f"{setting}_stage2_constant", "stage 2 floor: the better constant mask (chosen on val)", "stage2",
                 "informative", "none", False, stage2="constant", max_objects=MULTI_OBJECTS),
             Row(f"{setting}_stage2_resnet", "stage 2 on resnet's pseudo masks", "stage2", "informative", "resnet",
                 False, stage2=f"{setting}_resnet", max_objects=MULTI_OBJECTS),
             Row(f"{setting}_stage2_resnet_crm", "stage 2 on resnet + CRM's pseudo masks", "stage2", "informative",
                 "resnet", True, stage2=f"{setting}_resnet_crm", max_objects=MULTI_OBJECTS),
             Row(f"{setting}_stage2_gt", "stage 2 on ground truth (ceiling)", "stage2", "informative", "none", False,
                 stage2="gt", max_objects=MULTI_OBJECTS)]
    return tuple(rows)


# The multi-object rows: this many animals at most, on these appearances (random is left out: there
# the reconstruction cannot use the CAM with one object already).
MULTI_OBJECTS = 3
MULTI_OBJECT_APPEARANCES = ("informative", "camouflage")
#: Every table's data, in the order the report shows them.
SETTINGS: tuple[str, ...] = (*APPEARANCES, *(f"{a}_m{MULTI_OBJECTS}" for a in MULTI_OBJECT_APPEARANCES))


def setting_label(setting: str) -> str:
    """A setting in a few words: its appearance, and how many objects when several."""
    appearance, _, objects = setting.partition("_m")
    return f"{appearance}, 1-{objects} objects" if objects else appearance


ROWS: tuple[Row, ...] = _rows()
ROW_BY_KEY = {row.key: row for row in ROWS}
GROUPS = ("main", "floor", "baseline", "ceiling", "ablation", "mechanism", "backbone", "preset", "legacy", "stage2")
# Stage 2's recipe (crm_core.segment.SegConfig fields): the default architecture, on the recipe's
# data; pseudo masks from crm_core.postprocess for the whole train split, cut at the source CAM's
# val-chosen threshold t (CAM >= t object, < 0.44 t background: the default band
# moved to t by THRESHOLDS.band_at, crm_core.thresholds; uncertain between, ignored by the loss).
SEG_RECIPE: dict[str, Any] = dict(steps=200, batch_size=16, lr=1e-3, lr_schedule="cosine", weights="none", workers=0)
# Paired comparisons the table reads out: (row, baseline it is compared with).
COMPARISONS: tuple[tuple[str, str], ...] = tuple(
    pair for appearance in APPEARANCES for pair in (
        (f"{appearance}_resnet", f"{appearance}_resnet_floor"),
        (f"{appearance}_resnet_drs", f"{appearance}_resnet"),
        (f"{appearance}_resnet_crm", f"{appearance}_resnet"),
        (f"{appearance}_resnet_drs_crm", f"{appearance}_resnet_drs"),
        # against the cues that need no model (brightness; a colour classifier fitted on the
        # masks, which is more supervision than a CAM gets), and the plain CAM against a perfect
        # head-only map
        (f"{appearance}_resnet_crm", f"{appearance}_intensity"),
        (f"{appearance}_resnet_crm", f"{appearance}_colour"),
        (f"{appearance}_resnet_drs_crm", f"{appearance}_intensity"),
        (f"{appearance}_resnet", f"{appearance}_perfect_head"),
    )
) + (
    ("informative_resnet_drs_crm_sscinput", "informative_resnet_drs_crm"),
    ("informative_resnet_drs_crm_sscalign", "informative_resnet_drs_crm"),
    ("informative_resnet_drs_d03_crm", "informative_resnet_drs_d03"),
    ("informative_resnet_drs_d03", "informative_resnet"),  # does DRS itself help (CAM mIoU, PxAP, faithfulness)?
    ("informative_resnet_drs_crm_exact", "informative_resnet_drs_crm"),
    ("random_resnet_drs_crm_exact", "random_resnet_drs_crm"),
    *((f"{a}_efficientnet_b0_crm", f"{a}_efficientnet_b0") for a in ("informative", "camouflage")),
    *((f"{a}_efficientnet_b0", f"{a}_efficientnet_b0_floor") for a in ("informative", "camouflage")),
    ("informative_efficientnet_b0_drs", "informative_efficientnet_b0"),
    ("informative_efficientnet_b0_drs_crm", "informative_efficientnet_b0_drs"),
    ("informative_efficientnet_b0", "informative_resnet"),
    # which term carries CRM's effect
    *(pair for a in ("informative", "camouflage") for pair in (
        (f"{a}_resnet_crm_noalign", f"{a}_resnet"), (f"{a}_resnet_crm", f"{a}_resnet_crm_noalign"),
        (f"{a}_resnet_alignonly", f"{a}_resnet"), (f"{a}_resnet_crm", f"{a}_resnet_alignonly"))),
    # stage 2: do better CAMs give a better segmentation network, and how far is each from the ceiling?
    ("informative_stage2_resnet", "informative_stage2_constant"),
    ("informative_stage2_resnet_crm", "informative_stage2_resnet"),
    ("informative_stage2_gt", "informative_stage2_resnet"),
    ("informative_stage2_gt", "informative_stage2_resnet_crm"),
    ("informative_stage2_resnet_crm_sp", "informative_stage2_resnet_crm"),
    ("informative_stage2_resnet_crm", "informative_stage2_intensity"),
    # several objects per image: the same questions, and stage 2
    *(pair for a in MULTI_OBJECT_APPEARANCES for s in (f"{a}_m{MULTI_OBJECTS}",) for pair in (
        (f"{s}_resnet", f"{s}_resnet_floor"), (f"{s}_resnet_crm", f"{s}_resnet"),
        (f"{s}_resnet_crm", f"{s}_intensity"), (f"{s}_resnet_crm", f"{s}_colour"),
        (f"{s}_resnet", f"{s}_perfect_head"))),
    (f"informative_m{MULTI_OBJECTS}_stage2_resnet", f"informative_m{MULTI_OBJECTS}_stage2_constant"),
    (f"informative_m{MULTI_OBJECTS}_stage2_resnet_crm", f"informative_m{MULTI_OBJECTS}_stage2_resnet"),
    (f"informative_m{MULTI_OBJECTS}_stage2_gt", f"informative_m{MULTI_OBJECTS}_stage2_resnet_crm"),
)
# The headline family: the comparisons (row, baseline, metric) the README's claims of an effect rest
# on. Their p values are corrected together (Holm); an effect is claimed only where the adjusted p
# is below ALPHA. Every other comparison is exploratory.
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("informative_resnet_crm", "informative_resnet", "miou"),
    ("informative_resnet_crm", "informative_resnet", "body"),
    ("camouflage_resnet_crm", "camouflage_resnet", "miou"),
    ("camouflage_resnet_crm", "camouflage_resnet", "body"),
    ("informative_resnet_crm", "informative_colour", "miou"),
    ("informative_resnet_crm_noalign", "informative_resnet", "miou"),
    ("camouflage_resnet_crm_noalign", "camouflage_resnet", "miou"),
    ("informative_stage2_resnet_crm", "informative_stage2_resnet", "miou"),
    # several objects per image: does CRM's effect hold? (whether it blurs classes into each
    # other, the confusion column, is read out as exploratory)
    *((f"{a}_m{MULTI_OBJECTS}_resnet_crm", f"{a}_m{MULTI_OBJECTS}_resnet", "miou") for a in MULTI_OBJECT_APPEARANCES),
)
# A run whose median raw CAM peak (before max-normalisation) is below this is flagged: its maps
# are scaled up from almost nothing (an untrained EfficientNet's peak near 1e-14).
TINY_CAM_PEAK = 1e-6
# metric key -> (column title, format); "higher" says which direction is better (None: neither)
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "{:.3f}"),
    "miou": ("CAM mIoU (val thr.)", "{:.3f}"),
    "head": ("head covered", "{:.2f}"),
    "body": ("body covered", "{:.2f}"),
    "bg_fpr": ("background FP rate", "{:.3f}"),
    # several objects per image: the share of object pixels given another present class
    "confusion": ("class confusion", "{:.3f}"),
    "cam_dependence": ("CAM dependence", "{:+.2f}"),
    "train_s": ("train time (s)", "{:.0f}"),
    # stage 2 only: the mIoU of the masks it was trained on (train split), the CAM mIoU of the
    # model that made them (test split, val-chosen threshold: that row's "miou") and that threshold,
    # where the masks were cut
    "masks_miou": ("its masks' mIoU (train)", "{:.3f}"),
    "cam_miou": ("its CAM's mIoU (test)", "{:.3f}"),
    "masks_threshold": ("its masks' cut (val thr.)", "{:.2f}"),
    # the field's other CAM metrics (crm_core.evaluate): threshold-free, and faithful to the classifier
    "pxap": ("PxAP", "{:.3f}"),
    "average_drop": ("Average Drop %", "{:.1f}"),
    "increase_in_confidence": ("Increase in Confidence %", "{:.1f}"),
    "cam_area": ("map area", "{:.2f}"),
    "deletion_auc": ("deletion AUC", "{:.3f}"),
    "insertion_auc": ("insertion AUC", "{:.3f}"),
    "deletion_images": ("test images with curves", "{:.0f}"),  # --deletion-images, as each job records it
}
# The columns of the CAM tables (one per appearance), and of the stage-2 table, whose "miou" is the
# segmentation network's mask mIoU on the test split.
CAM_TABLE_METRICS = ("accuracy", "miou", "head", "body", "bg_fpr", "cam_dependence", "train_s")
STAGE2_METRICS = ("miou", "head", "body", "bg_fpr", "masks_miou", "masks_threshold", "cam_miou", "train_s")
COMPARED = ("miou", "head", "body", "bg_fpr", "accuracy", "cam_dependence", "confusion")
# PxAP, faithfulness and the map's area: their own table, beside the same metrics of maps from no
# model (crm_core.experiments.baselines.FAITHFULNESS_REFERENCES) judged by the same classifier, and
# compared over the same pairs (exploratory: none is in the headline family).
FAITHFULNESS_COLUMNS = ("pxap", "average_drop", "increase_in_confidence", "cam_area")
# RISE's deletion and insertion AUCs (``--faithfulness full``): a table of their own, as only the
# rows run with it have them; each drawn on the first DELETION_IMAGES test images (42 forward passes
# per image and map: on all 200, a CPU job would take four times as long as it trains).
DELETION_METRICS = ("deletion_auc", "insertion_auc")
DELETION_IMAGES = 64
FAITHFULNESS_METRICS = (*FAITHFULNESS_COLUMNS, *DELETION_METRICS)
REFERENCE_LABELS = {"random": "random map", "intensity": "brightness", "all_ones": "all ones"}
# Below these sizes a difference is "negligible" even when it clears 2 SE: paired seeds can make
# the standard error of a tiny, consistent difference ~0 (two runs that differ only in a term too
# weak to move anything), and +0.001 mIoU is not a finding.
ALPHA = 0.05  # significance level of the two-sided paired t-test
NEGLIGIBLE: dict[str, float] = {"miou": 0.01, "head": 0.01, "body": 0.01, "bg_fpr": 0.005, "accuracy": 0.005,
                                "confusion": 0.005,
                                "cam_dependence": 0.01, "pxap": 0.01, "average_drop": 1.0,
                                "increase_in_confidence": 1.0, "cam_area": 0.01, "deletion_auc": 0.01,
                                "insertion_auc": 0.01}



# Order of the groups in a table: the floor and the cues first, the ceilings last.
TABLE_ORDER = ("floor", "baseline", "main", "mechanism", "ablation", "backbone", "preset", "legacy", "ceiling")
APPEARANCE_TITLES = {
    "random": "Random appearance (reconstruction cannot use the CAM)",
    "informative": "Informative appearance (one class-agnostic object appearance; brightness nearly segments it)",
    "camouflage": "Camouflage appearance (the object's look, shared by distractors that cover more area)",
    **{f"{a}_m{MULTI_OBJECTS}": f"{a.capitalize()} appearance, 1-{MULTI_OBJECTS} objects of distinct classes per "
       "image (multi-class protocol: mIoU over background + 4 classes; accuracy: the whole label set right)"
       for a in MULTI_OBJECT_APPEARANCES},
}



# The results table, part by part (``--plan``): rows and seeds of each part (and, optionally, extra
# CLI arguments of that part), run in this order and merged into one JSON. Every row gets 5 seeds
# (random is the control where the decoder cannot use the CAM). The baselines and ceilings (no
# model) of every appearance come first (about 20 s a run on two cores). Not in it: DRS at delta
# 0.55 with and without CRM and the SSC ablations; their last measurement is in docs/results_2026-11.md.
README_PLAN: tuple[tuple[Any, ...], ...] = (
    (tuple(r.key for r in ROWS if r.group in ("baseline", "ceiling")), 5),
    (("informative_resnet_floor", "informative_resnet", "informative_resnet_crm"), 5),
    (("camouflage_resnet_floor", "camouflage_resnet", "camouflage_resnet_crm"), 5),
    (("random_resnet_floor", "random_resnet", "random_resnet_crm"), 5),
    (("informative_resnet_drs_d03", "informative_resnet_drs_d03_crm"), 5),
    # which of CRM's terms carries the effect (5 seeds: a headline claim rests on it)
    (tuple(r.key for r in ROWS if r.group == "mechanism"), 5),
    # the second backbone family, at its own training length (EFFICIENTNET_LENGTH)
    (("informative_efficientnet_b0_floor", "informative_efficientnet_b0", "informative_efficientnet_b0_crm"), 5),
    (("camouflage_efficientnet_b0_floor", "camouflage_efficientnet_b0", "camouflage_efficientnet_b0_crm"), 5),
    (("informative_efficientnet_b0_drs", "informative_efficientnet_b0_drs_crm"), 5),
    # stage 2 (its CAM models are the informative resnet rows' own checkpoints, reused when still
    # there, else retrained at the thread count their jobs recorded and checked against them):
    # 5 CAM seeds x 3 networks each; CRM's masks against plain ones is a headline comparison
    (tuple(r.key for r in ROWS if r.group == "stage2"), 5, ("--stage2-seeds", "3")),
)
#: The one command that rebuilds the results table from nothing (README_PLAN, part by part).
PLAN_COMMAND = "python -m crm_core.experiments.results --plan --jobs 2"
# The generated blocks (``--readme PATH ...`` fills each one a file holds): docs/results.md's tables
# and README.md's headline table.
RESULTS_BEGIN, RESULTS_END = ("<!-- results:begin (generated by python -m crm_core.experiments.results --readme) -->",
                              "<!-- results:end -->")
HEADLINE_BEGIN, HEADLINE_END = ("<!-- headline:begin (generated by python -m crm_core.experiments.results --readme) -->",
                                "<!-- headline:end -->")
# The README's one table: a line per question, the same columns on each (floor, the no-model cues,
# the plain and the CRM model, the ceiling); a row missing from the report reads "-". Stage 2's
# floor is the better constant mask, its "brightness" the network trained on the brightness's masks.
HEADLINE_COLUMNS = ("floor", "image brightness (no model)", "colour classifier (no model)", "resnet18",
                    "resnet18 + CRM", "ceiling")
HEADLINE_LINES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    *((f"{appearance}: CAM mIoU", (f"{appearance}_resnet_floor", f"{appearance}_intensity", f"{appearance}_colour",
                                  f"{appearance}_resnet", f"{appearance}_resnet_crm", f"{appearance}_perfect_object"))
      for appearance in ("informative", "camouflage", "random")),
    ("informative: stage-2 network's mIoU", ("informative_stage2_constant", "informative_stage2_intensity", None,
                                             "informative_stage2_resnet", "informative_stage2_resnet_crm",
                                             "informative_stage2_gt")),
    # several objects per image: mIoU over background + 4 classes (the ceiling: perfect class masks)
    *((f"{setting_label(f'{a}_m{MULTI_OBJECTS}')}: CAM mIoU", tuple(f"{a}_m{MULTI_OBJECTS}_{r}" for r in (
        "resnet_floor", "intensity", "colour", "resnet", "resnet_crm", "perfect_object")))
      for a in MULTI_OBJECT_APPEARANCES),
    (f"{setting_label(f'informative_m{MULTI_OBJECTS}')}: stage-2 network's mIoU",
     tuple(f"informative_m{MULTI_OBJECTS}_{r}" if r else None for r in (
         "stage2_constant", None, None, "stage2_resnet", "stage2_resnet_crm", "stage2_gt"))),
)
# The comparisons the results block reads out, per appearance (row, baseline): CRM against none, against
# brightness and against the colour classifier, the trained plain model against its floor and
# against a perfect head-only map.
RESULTS_COMPARISONS = (("resnet_crm", "resnet"), ("resnet_drs_crm", "resnet_drs"), ("resnet_crm", "intensity"),
                       ("resnet_crm_noalign", "resnet"), ("resnet_crm", "resnet_crm_noalign"),
                       ("resnet_alignonly", "resnet"), ("resnet_crm", "resnet_alignonly"),
                       ("resnet_crm", "colour"),
                       ("resnet", "resnet_floor"), ("resnet", "perfect_head"), ("resnet_drs_d03_crm", "resnet_drs_d03"))
RESULTS_METRICS = ("accuracy", "miou", "head", "body", "bg_fpr", "cam_dependence")
