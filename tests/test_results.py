"""The multi-seed results driver: rows, the untrained floor, paired comparisons, --reuse, --merge."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from crm_core.experiments import paired_stats, results, results_jobs, results_report, results_summary, results_table
from crm_core.recipes import CRM


def test_rows_cover_the_issue_grid() -> None:
    main = {(r.appearance, r.model, r.crm) for r in results_table.ROWS if r.group == "main"}
    appearances = ("random", "informative", "camouflage")
    assert main == {(a, m, c) for a in appearances for m in ("resnet", "resnet_drs") for c in (False, True)}
    # every appearance carries its no-model cues and its ceilings
    assert {(r.appearance, r.baseline) for r in results_table.ROWS if r.baseline} == {
        (a, b) for a in appearances for b in ("intensity", "colour", "perfect_head", "perfect_object")}
    floors = [r for r in results_table.ROWS if r.group == "floor"]
    assert floors and all(r.untrained and r.train_fields(200, {})["steps"] == 0 for r in floors)
    crm = results_table.ROW_BY_KEY["informative_resnet_drs_crm"].train_fields(200, {})
    assert crm["l1_weight"] == CRM.l1_weight and crm["appearance"] == "informative"
    assert results_table.ROW_BY_KEY["informative_resnet_drs_d03_crm"].train_fields(200, {})["delta"] == "0.3"
    assert all(a in results_table.ROW_BY_KEY and b in results_table.ROW_BY_KEY for a, b in results_table.COMPARISONS)


META = {"command": "x", "wall_s": 60, "machine": "m", "jobs": 1, "device": "cpu", "steps": 1, "crm_recipe": {}}


def test_paired_t_test_matches_scipy_and_hand_computed_values() -> None:
    from scipy import stats

    diffs = [0.12, 0.15, 0.09, 0.2, 0.11]
    t, p = paired_stats.paired_t_test(diffs)
    ref = stats.ttest_rel([0.5 + d for d in diffs], [0.5] * 5)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # 3 seeds at t = 2.89 (mean 0.05, SE 0.017): beyond 2 SE, yet p = 0.10 on 2 degrees of freedom.
    t, p = paired_stats.paired_t_test([0.02, 0.05, 0.08])
    assert t == pytest.approx(0.05 / (0.03 / 3 ** 0.5)) and p == pytest.approx(0.102, abs=0.002)
    assert paired_stats.paired_t_test([0.01] * 4) == (float("inf"), 0.0)
    assert paired_stats.paired_t_test([0.0] * 4) == (0.0, 1.0)


def test_summary_calls_an_effect_only_at_p_below_alpha_and_above_the_minimal_size() -> None:
    jobs = [{"row": "random_resnet", "seed": s, "miou": 0.5 + d, "body": 0.2} for s, d in enumerate((0.0, 0.01, -0.01))]
    jobs += [{"row": "random_resnet_floor", "seed": s, "miou": 0.3 + d, "body": 0.2 + e}
             for s, (d, e) in enumerate(((0.0, 0.03), (0.005, -0.02), (-0.004, 0.0)))]
    summary = results_summary.summarise(jobs)
    assert summary["rows"]["random_resnet"]["stats"]["miou"]["mean"] == pytest.approx(0.5)
    assert summary["rows"]["random_resnet"]["stats"]["miou"]["std"] == pytest.approx(0.01)
    (comparison,) = summary["comparisons"]
    miou = comparison["metrics"]["miou"]
    assert miou["effect"] and miou["diff"] == pytest.approx(0.2, abs=1e-3) and miou["p"] < 0.05
    assert not comparison["metrics"]["body"]["effect"] and comparison["metrics"]["body"]["p"] > 0.05  # noise around 0
    table = results_report.markdown({"summary": summary, "jobs": jobs, "meta": META})
    assert "**+0.200**" in table and "no effect" in table and "(floor)" in table and "p < 0.001" in table
    # Mean difference > 2 SE, which the old rule called an effect, on 3 seeds: p = 0.10, no effect now.
    lenient = [{"row": "random_resnet", "seed": s, "miou": 0.5 + d} for s, d in enumerate((0.02, 0.05, 0.08))]
    lenient += [{"row": "random_resnet_floor", "seed": s, "miou": 0.5} for s in range(3)]
    (comparison,) = results_summary.summarise(lenient)["comparisons"]
    m = comparison["metrics"]["miou"]
    assert abs(m["diff"]) > 2 * m["se"] and 0.05 < m["p"] < 0.2 and not m["effect"]
    # A tiny difference that is the same on every seed is significant (no spread) but not a finding.
    tiny = [{"row": "random_resnet", "seed": s, "miou": 0.5 + d, "body": 0.2} for s, d in enumerate((0.0, 0.01, -0.01))]
    tiny += [{"row": "random_resnet_floor", "seed": s, "miou": 0.499 + d, "body": 0.2} for s, d in enumerate((0.0, 0.01, -0.01))]
    (comparison,) = results_summary.summarise(tiny)["comparisons"]
    miou = comparison["metrics"]["miou"]
    assert miou["negligible"] and not miou["effect"] and miou["diff"] == pytest.approx(0.001, abs=1e-9)
    table = results_report.markdown({"summary": results_summary.summarise(tiny), "jobs": tiny, "meta": META})
    assert "negligible (+0.001" in table


def test_tables_read_between_floor_baselines_and_ceiling() -> None:
    jobs = []
    for s in range(3):
        jobs += [{"row": "camouflage_resnet_floor", "seed": s, "miou": 0.5, "threshold": 0.4},
                 {"row": "camouflage_resnet_crm", "seed": s, "miou": 0.6 + 0.01 * s, "threshold": 0.999,
                  "thresholds": [0.0, 0.999, 109]},
                 {"row": "camouflage_intensity", "seed": s, "miou": 0.54, "threshold": 0.5},
                 {"row": "camouflage_perfect_object", "seed": s, "miou": 0.9, "threshold": 0.4}]
    summary = results_summary.summarise(jobs)
    assert results_report.ceiling_share(summary, "camouflage_resnet_crm") == pytest.approx((0.61 - 0.5) / 0.4)
    lines = results_report.appearance_table(summary, "camouflage")
    labels = [line.split(" | ")[0] for line in lines[2:]]
    assert "floor" in labels[0] and "brightness" in labels[1] and "ceiling" in labels[-1]
    edges = summary["grid_edges"]
    assert edges["at_edge"] == [{"row": "camouflage_resnet_crm", "seed": s} for s in range(3)]
    assert "3 of 12 runs chose its edge" in results_report.edges_line(summary)
    crm_vs_brightness = next(c for c in summary["comparisons"] if c["baseline"] == "camouflage_intensity")
    assert crm_vs_brightness["metrics"]["miou"]["effect"]


def test_results_cli_runs_rows_floor_reuse_and_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_LAB_NO_PROGRESS", "1")
    common = ["--steps", "1", "--train-size", "32", "--test-limit", "4", "--val-limit", "4",
              "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs"),
              "--out", str(tmp_path / "results.md"), "--json", str(tmp_path / "results.json"),
              "--allow-dirty"]
    rows = ["random_resnet_floor", "random_resnet_drs_crm"]
    assert results.cli(["--rows", *rows, *common]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert [(j["row"], j["seed"]) for j in report["jobs"]] == [(r, 0) for r in rows]
    floor, crm = report["jobs"]
    assert floor["train_s"] == 0 and floor["cam_dependence"] is None
    assert crm["cam_dependence"] is not None and crm["notices"]  # the perceptual term's notice
    for job in report["jobs"]:
        assert 0 <= job["miou"] <= 1 and 0 <= job["bg_fpr"] <= 1 and job["head"] is not None
        assert 0 <= job["pxap"] <= 1 and 0 <= job["cam_area"] <= 1 and job["average_drop"] >= 0  # the field's metrics
        # ... and what maps from no model score on them under the same classifier: all ones keeps the
        # image (no drop, all of it), so Average Drop is read beside the area
        assert set(job["references"]) == {"all_ones", "random", "intensity"}
        assert job["references"]["all_ones"]["average_drop"] == 0.0 and job["references"]["all_ones"]["cam_area"] == 1.0
        assert 0 < job["references"]["random"]["cam_area"] < 1
        assert (tmp_path / "runs" / results.checkpoint_name(results_table.ROW_BY_KEY[job["row"]], 0) / "eval.json").is_file()
    assert "resnet untrained (floor)" in (tmp_path / "results.md").read_text()

    # --reuse keeps checkpoints trained with the same config; --merge keeps the other rows' jobs and
    # the oracle section (measured by --oracle, not by any row).
    report["oracle"] = {"random": {"oracle_gain": 0.001, "intensity_miou": 0.45, "colour_miou": 0.5}}
    (tmp_path / "results.json").write_text(json.dumps(report))
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ck").glob("*.pt")}
    assert results.cli(["--rows", "random_resnet_drs_crm", "--reuse", "--merge", *common]) == 0
    assert all((tmp_path / "ck" / p).stat().st_mtime_ns == t for p, t in stamps.items())
    merged = json.loads((tmp_path / "results.json").read_text())
    assert sorted(j["row"] for j in merged["jobs"]) == sorted(rows) and merged["jobs"][-1]["reused"]
    assert merged["oracle"] == report["oracle"]
    assert results.cli(["--rows", "no_such_row", *common]) == 2


def _report(jobs: list[dict]) -> dict:
    meta = {**META, "revision": "abc", "merged_with": {**META, "wall_s": 120}}
    return {"meta": meta, "jobs": jobs, "summary": results_summary.summarise(jobs),
            "oracle": {"camouflage": {"oracle_gain": 0.093, "l1_constant": 0.4, "l1_oracle": 0.36,
                                      "intensity_miou": 0.536, "colour_miou": 0.602}}}


def test_the_generated_blocks_come_from_the_json_and_replace_only_themselves(tmp_path: Path) -> None:
    jobs = []
    for s in range(5):
        jobs += [{"row": "camouflage_resnet_floor", "seed": s, "miou": 0.5 + 0.001 * s, "body": 0.3, "accuracy": 0.25},
                 {"row": "camouflage_resnet", "seed": s, "miou": 0.55 + 0.002 * s, "body": 0.2, "accuracy": 0.99,
                  "train_s": 200.0 + s},
                 {"row": "camouflage_resnet_crm", "seed": s, "miou": 0.65 + 0.003 * s, "body": 0.5, "accuracy": 0.99,
                  "train_s": 300.0, "cam_dependence": 0.3},
                 {"row": "camouflage_intensity", "seed": s, "miou": 0.536, "body": 0.98},
                 {"row": "camouflage_perfect_object", "seed": s, "miou": 0.92, "body": 0.95}]
    report = _report(jobs)
    block = results_report.results_block(report)
    assert "9.3%" in block and "0.536" in block and "0.602" in block  # the oracle table
    assert "resnet + CRM − resnet (n = 5)" in block and "**+0.102**" in block and "p < 0.001" in block
    busy = sum(j.get("train_s", 0) for j in jobs)  # the jobs' own times, at 1 job at a time
    assert f"{busy / 60:.0f} min of training and evaluation" in block and "200–300 s" in block
    # the README's headline: floor, cues, plain, CRM, its difference with the family's Holm p, ceiling;
    # a row not in the report ("colour") reads "-", and a question with no row at all is left out
    headline = results_report.headline_block(report)
    assert ("| camouflage: CAM mIoU | 0.502 ± 0.002 | 0.536 ± 0.000 | – | 0.554 ± 0.003 | 0.656 ± 0.005 | "
            "+0.102 (Holm-adjusted p < 0.001) | 0.920 ± 0.000 |") in headline
    assert "informative:" not in headline and "Seeds 0, 1, 2, 3, 4" not in headline
    readme, results_md = tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text(f"# title\n{results_table.HEADLINE_BEGIN}\nold\n{results_table.HEADLINE_END}\ntail\n")
    results_md.write_text(f"# title\n{results_table.RESULTS_BEGIN}\nold numbers\n{results_table.RESULTS_END}\ntail\n")
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert results.cli(["--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "r.md"),
                        "--readme", str(readme), str(results_md)]) == 0
    text = results_md.read_text()
    assert text.startswith("# title\n") and text.endswith(f"{results_table.RESULTS_END}\ntail\n")
    assert "old numbers" not in text and block in text
    text = readme.read_text()
    assert text == f"# title\n{results_table.HEADLINE_BEGIN}\n{headline}{results_table.HEADLINE_END}\ntail\n"
    readme.write_text("no block here\n")
    assert results.cli(["--json", str(tmp_path / "r.json"), "--out", "", "--readme", str(readme)]) == 2


def test_the_repository_readme_and_results_page_match_docs_results_json() -> None:
    root = Path(__file__).resolve().parent.parent
    report = json.loads((root / "docs" / "results.json").read_text())
    report["summary"] = results_summary.summarise(report["jobs"])
    stale = "stale: python -m crm_core.experiments.results --readme README.md docs/results.md"
    assert results_report.headline_block(report) in (root / "README.md").read_text(), f"README.md is {stale}"
    assert results_report.results_block(report) in (root / "docs" / "results.md").read_text(), \
        f"docs/results.md is {stale}"


def test_plan_runs_every_part_merged_into_one_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(results, "README_PLAN", ((("random_resnet_floor",), 2), (("random_intensity",), 1)))
    real_cli = results.cli

    def spy(argv):  # the parts themselves are cli runs, tested above
        calls.append(list(argv))
        return 0

    monkeypatch.setattr(results, "cli", spy)
    assert real_cli(["--plan", "--jobs", "2", "--json", str(tmp_path / "r.json")]) == 0
    assert [c[c.index("--rows") + 1] for c in calls[:2]] == ["random_resnet_floor", "random_intensity"]
    assert all("--merge" in c and "--plan" not in c for c in calls[:2]) and calls[0][-1] == "2"
    assert "--oracle" in calls[-1]


def test_every_number_of_the_results_prose_is_in_docs_results_json() -> None:
    """The prose under the generated blocks (docs/results.md's "What the numbers say", the README's
    reading of its headline table) is written by hand: each of its decimals must be a value of the
    JSON (a row's mean, a paired difference or its p, a floor -> ceiling share, an oracle figure)
    at the precision printed, so a rerun that changes the table fails here until the prose is rewritten."""
    import re

    from crm_core.experiments.results_report import ceiling_share

    root = Path(__file__).resolve().parent.parent
    results_md = (root / "docs" / "results.md").read_text()
    readme = (root / "README.md").read_text()
    after_headline = readme[readme.index(results_table.HEADLINE_END):]
    proses = {"docs/results.md": (results_md[results_md.index(results_table.RESULTS_END):], 30),
              "README.md": (after_headline[:after_headline.index("\n## ")], 5)}
    report = json.loads((root / "docs" / "results.json").read_text())
    summary = results_summary.summarise(report["jobs"])
    values = []
    for key, row in summary["rows"].items():
        values += [stats["mean"] for stats in row["stats"].values()]
        values += [s["mean"] for reference in row.get("references", {}).values() for s in reference.values()]
        values += [v for versus in row.get("vs_references", {}).values() for m in versus.values()
                   for v in (m["diff"], m["p"])]
        share = ceiling_share(summary, key)
        values += [] if share is None else [100 * share]
    for comparison in summary["comparisons"]:
        values += [v for m in comparison["metrics"].values() for v in (m["diff"], m["p"], m.get("p_holm", m["p"]))]
    values.append(summary["stage2_sources"]["largest"])
    for oracle in report.get("oracle", {}).values():
        values += [100 * oracle["oracle_gain"], oracle["intensity_miou"], oracle["colour_miou"]]
    constants = {"0.001", "0.01", "0.05", "0.3", "0.55", "0.95"}  # p bound, minimal size, alpha, deltas, old grid top
    for name, (prose, at_least) in proses.items():
        numbers = re.findall(r"([+−-]?)(\d+\.\d+)", prose)
        assert len(numbers) >= at_least, name
        unmatched = []
        for sign, digits in numbers:
            if digits in constants:
                continue
            places = len(digits.split(".")[1])
            value = float(digits) * (-1 if sign in ("−", "-") else 1)
            if not any(round(v, places) == round(value, places) or (not sign and round(abs(v), places) == value)
                       for v in values):
                unmatched.append(sign + digits)
        assert not unmatched, f"{name}: numbers not in docs/results.json: {unmatched}"


def test_stage2_table_pairs_each_network_with_its_masks_and_reads_out_the_differences() -> None:
    jobs = []
    for s in range(3):
        jobs += [{"row": "informative_stage2_resnet", "seed": s, "miou": 0.60 + 0.01 * s, "masks_miou": 0.55,
                  "cam_miou": 0.58, "masks_threshold": 0.6, "head": 0.9, "body": 0.4, "bg_fpr": 0.02, "train_s": 100.0},
                 {"row": "informative_stage2_resnet_crm", "seed": s, "miou": 0.70 + 0.012 * s, "masks_miou": 0.65,
                  "cam_miou": 0.72, "masks_threshold": 0.5, "head": 0.9, "body": 0.7, "bg_fpr": 0.03, "train_s": 100.0},
                 {"row": "informative_stage2_gt", "seed": s, "miou": 0.90 + 0.001 * s, "masks_miou": 1.0,
                  "head": 0.95, "body": 0.95, "bg_fpr": 0.01, "train_s": 100.0}]
    report = _report(jobs)
    lines = "\n".join(results_report.stage2_table(report["summary"]))
    assert "| stage 2 on resnet + CRM's pseudo masks | 3 | 0.712 ± 0.012 |" in lines
    # its masks' mIoU, the threshold they were cut at and its CAM's mIoU beside it
    assert "| 0.650 ± 0.000 | 0.50 ± 0.00 | 0.720 ± 0.000 |" in lines
    assert "stage 2 on resnet + CRM's pseudo masks − stage 2 on resnet's pseudo masks (n = 3): " \
           "segmentation mIoU **+0.102**" in lines
    assert "stage 2 on ground truth (ceiling) − stage 2 on resnet + CRM's pseudo masks" in lines
    # the CAM tables do not list the stage-2 rows; the report and the README block carry the stage-2 table
    assert "stage 2" not in "\n".join(results_report.appearance_table(report["summary"], "informative"))
    assert lines.split("\n")[0] in results_report.markdown(report) and lines.split("\n")[0] in results_report.results_block(report)


def test_stage2_rows_train_the_source_cam_then_a_segmentation_network(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_LAB_NO_PROGRESS", "1")
    common = ["--steps", "1", "--stage2-steps", "1", "--train-size", "16", "--test-limit", "4", "--val-limit", "4",
              "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs"),
              "--out", str(tmp_path / "results.md"), "--json", str(tmp_path / "results.json"),
              "--allow-dirty"]
    # the table's own CAM job first; its checkpoint is then lost (a fresh clone has none), so the
    # stage-2 job retrains it at the thread count that job recorded and checks the copy reproduces it
    assert results.cli(["--rows", "informative_resnet", "--threads", "1", *common]) == 0
    (tmp_path / "ck" / "results_informative_resnet_s0.pt").unlink()
    assert results.cli(["--rows", "informative_stage2_resnet", "informative_stage2_gt", "informative_stage2_floor",
                        "informative_stage2_resnet_crm_sp", "informative_stage2_intensity",
                        "informative_stage2_constant", "--merge", "--threads", "2", *common]) == 0
    jobs = {j["row"]: j for j in json.loads((tmp_path / "results.json").read_text())["jobs"]}
    refined = json.loads((tmp_path / "runs" / "results_informative_stage2_resnet_crm_sp_s0" / "pseudo_masks"
                          / "manifest.json").read_text())
    assert refined["refined"] and jobs["informative_stage2_resnet_crm_sp"]["masks_miou"] == refined["miou"]
    pseudo, gt, floor = jobs["informative_stage2_resnet"], jobs["informative_stage2_gt"], jobs["informative_stage2_floor"]
    cam_eval = json.loads((tmp_path / "runs" / "results_informative_resnet_s0" / "eval.json").read_text())
    assert pseudo["cam_miou"] == cam_eval["cam_miou_val_threshold"]["miou"]  # paired with the CAM that made its masks
    assert pseudo["source_threads"] == jobs["informative_resnet"]["threads"] == 1 and pseudo["threads"] == 2
    assert pseudo["source_reproduces_table"] and pseudo["cam_miou"] == jobs["informative_resnet"]["miou"]
    manifest = json.loads((tmp_path / "runs" / "results_informative_stage2_resnet_s0" / "pseudo_masks"
                           / "manifest.json").read_text())
    # the masks are cut where the CAM's own evaluation chose its threshold on val, the band moved there
    val_threshold = cam_eval["cam_miou_val_threshold"]["threshold"]
    assert pseudo["masks_threshold"] == manifest["val_threshold"] == manifest["high"] == val_threshold
    assert manifest["low"] == pytest.approx(0.2 / 0.45 * val_threshold)
    scores = json.loads((tmp_path / "runs" / "results_informative_stage2_resnet_s0" / "pseudo_masks" / "scores.json")
                        .read_text())
    assert pseudo["masks_miou"] == scores["miou"] and scores["num_images"] == 16
    assert gt["masks_miou"] == 1.0 and gt["cam_miou"] is None and gt["source_checkpoint"] is None
    # the floor: the same network with no training step, its checkpoint says so
    from crm_core.checkpoints import load_segmentation_checkpoint
    assert load_segmentation_checkpoint(floor["checkpoint"]).step == 0 and floor["masks_threshold"] is None
    assert floor["masks_miou"] is None  # it never trained on any mask
    # the floor of any mask: the better constant prediction, chosen on val, scored on the same test images
    constant = jobs["informative_stage2_constant"]
    assert constant["prediction"] == "all background" and constant["fg_iou"] == 0 and constant["bg_fpr"] == 0
    assert constant["head"] == constant["body"] == 0 and constant.get("masks_miou") is None
    # the no-model cue's masks: the brightness map cut where its own job chose on val
    bright = jobs["informative_stage2_intensity"]
    bright_manifest = json.loads((tmp_path / "runs" / "results_informative_stage2_intensity_s0" / "pseudo_masks"
                                  / "manifest.json").read_text())
    cue = results.score_row_baseline(results_table.ROW_BY_KEY["informative_intensity"], 0, 4, 4)
    assert bright["masks_threshold"] == bright_manifest["high"] == cue["threshold"] and bright["cam_miou"] == cue["miou"]
    assert bright_manifest["checkpoint"] == "baseline intensity" and bright_manifest["num_images"] == 16
    from crm_core.experiments.baselines import intensity_map
    from crm_core.data import build_dataset
    from crm_core.postprocess import pseudo_trimap
    from PIL import Image
    import numpy as np
    item = build_dataset(split="train", **bright_manifest["dataset"])[3]
    expected = pseudo_trimap(intensity_map(item["image"][None]), bright_manifest["low"], bright_manifest["high"])[0]
    png = tmp_path / "runs" / "results_informative_stage2_intensity_s0" / "pseudo_masks" / "000003.png"
    assert np.array_equal(np.array(Image.open(png)), expected.numpy())
    for job in (pseudo, gt, floor, bright):
        assert 0 <= job["miou"] <= 1 and job["head"] is not None and "--stage2-steps 1" in job["command"]
    assert "segmentation mIoU (test)" in (tmp_path / "results.md").read_text()


def test_stage2_networks_per_seed_are_averaged_before_pairing_and_rerun_alone() -> None:
    jobs = []
    for seed in range(3):
        for k, bump in enumerate((0.0, 0.02, 0.04)):  # three networks on each CAM seed's masks
            jobs.append({"row": "informative_stage2_resnet_crm", "seed": seed, "stage2_seed": k,
                         "miou": 0.60 + 0.01 * seed + bump})
        jobs.append({"row": "informative_stage2_resnet", "seed": seed, "stage2_seed": 0, "miou": 0.55 + 0.01 * seed})
    summary = results_summary.summarise(jobs)
    row = summary["rows"]["informative_stage2_resnet_crm"]
    assert row["stats"]["miou"]["n"] == 3 and row["networks_per_seed"] == 3
    assert row["stats"]["miou"]["mean"] == pytest.approx(0.63)  # the mean of per-seed means
    pair = next(c for c in summary["comparisons"] if c["row"] == "informative_stage2_resnet_crm"
                and c["baseline"] == "informative_stage2_resnet")
    assert pair["metrics"]["miou"]["n"] == 3 and pair["metrics"]["miou"]["diff"] == pytest.approx(0.07)
    assert "| 3 × 3 networks |" in "\n".join(results_report.stage2_table(summary))
    # each network has its own checkpoint and seed, and its command reruns it alone
    row_def = results_table.ROW_BY_KEY["informative_stage2_resnet_crm"]
    assert results.checkpoint_name(row_def, 2, 1) == "results_informative_stage2_resnet_crm_s2_n1"
    assert results.checkpoint_name(row_def, 2, 0) == "results_informative_stage2_resnet_crm_s2"
    assert results_jobs.stage2_network_seed(2, 0) == 2 and results_jobs.stage2_network_seed(2, 1) == 1002
    command = results.job_command("informative_stage2_resnet_crm", 2, 200, 200, 100, "cpu", {}, None,
                                  threads=1, stage2_seed=1)
    assert "--first-stage2-seed 1 --stage2-seeds 1" in command
    assert results.job_key({"row": "r", "seed": 1}) == ("r", 1, 0)


def test_stage2_seeds_train_one_network_each_and_merge_keeps_them_apart(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_LAB_NO_PROGRESS", "1")
    common = ["--rows", "informative_stage2_gt", "--stage2-steps", "1", "--train-size", "16", "--test-limit", "4",
              "--val-limit", "4", "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs"),
              "--out", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json"), "--allow-dirty", "--merge"]
    assert results.cli([*common, "--stage2-seeds", "2"]) == 0
    assert results.cli([*common, "--first-stage2-seed", "1", "--stage2-seeds", "1"]) == 0  # one network rerun alone
    jobs = json.loads((tmp_path / "r.json").read_text())["jobs"]
    assert sorted(results.job_key(j) for j in jobs) == [("informative_stage2_gt", 0, 0), ("informative_stage2_gt", 0, 1)]
    from crm_core.checkpoints import load_segmentation_checkpoint
    seeds = {j["stage2_seed"]: load_segmentation_checkpoint(j["checkpoint"]).seg_config["seed"] for j in jobs}
    assert seeds == {0: 0, 1: 1000}


def test_a_stage2_source_is_trained_and_evaluated_once_for_all_its_networks(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Three networks learn one CAM seed's masks: the CAM model trains once, before them (parallel
    jobs would otherwise each train it), and its evaluation skips the faithfulness passes."""
    import crm_core.train

    monkeypatch.setenv("CRM_LAB_NO_PROGRESS", "1")
    trained: list[str] = []
    real_main = crm_core.train.main
    monkeypatch.setattr(crm_core.train, "main", lambda cfg: (trained.append(cfg.name), real_main(cfg))[1])
    assert results.cli(["--rows", "informative_stage2_resnet", "--stage2-seeds", "3", "--jobs", "1", "--steps", "1",
                        "--stage2-steps", "1", "--train-size", "16", "--test-limit", "4", "--val-limit", "4",
                        "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs"),
                        "--out", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json"), "--allow-dirty"]) == 0
    assert trained == ["results_informative_resnet_s0"]
    jobs = json.loads((tmp_path / "r.json").read_text())["jobs"]
    assert sorted(j["stage2_seed"] for j in jobs) == [0, 1, 2]
    cam_eval = json.loads((tmp_path / "runs" / "results_informative_resnet_s0" / "eval.json").read_text())
    assert {j["cam_miou"] for j in jobs} == {cam_eval["cam_miou_val_threshold"]["miou"]}
    assert "average_drop" not in cam_eval and "references" not in cam_eval and "pxap" in cam_eval


def test_faithfulness_full_adds_deletion_and_insertion_beside_the_maps_from_no_model(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``--faithfulness full``: a CAM row's job carries RISE's deletion and insertion AUCs of its
    first ``--deletion-images`` test images, and so does each map from no model scored beside it;
    its command reruns it the same way, and the report gives them a table of their own."""
    monkeypatch.setenv("CRM_LAB_NO_PROGRESS", "1")
    assert results.cli(["--rows", "informative_resnet_floor", "informative_intensity", "--jobs", "1", "--train-size",
                        "16", "--test-limit", "4", "--val-limit", "4", "--faithfulness", "full", "--deletion-images", "2",
                        "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs"),
                        "--out", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json"), "--allow-dirty"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    job = next(j for j in report["jobs"] if j["row"] == "informative_resnet_floor")
    assert job["deletion_images"] == 2 and 0.0 <= job["deletion_auc"] <= 1.0 and 0.0 <= job["insertion_auc"] <= 1.0
    assert job["command"].endswith("--faithfulness full --deletion-images 2")
    for name in ("random", "intensity", "all_ones"):
        assert 0.0 <= job["references"][name]["deletion_auc"] <= 1.0, name
    cue = next(j for j in report["jobs"] if j["row"] == "informative_intensity")
    assert "--faithfulness" not in cue["command"]  # a map from no model's own row has no classifier to judge it
    stats = report["summary"]["rows"]["informative_resnet_floor"]
    assert stats["stats"]["deletion_auc"]["n"] == 1 and stats["references"]["random"]["insertion_auc"]["n"] == 1
    table = "\n".join(results_report.deletion_table(report["summary"], "informative"))
    assert "| resnet untrained (floor) | 1 | " in table and "random map: deletion AUC / insertion AUC" in table
    assert "| test images with curves |" in table and " | 2 | " in table  # the count the job recorded, not the default
    assert results_report.DELETION_TITLE in (tmp_path / "r.md").read_text()
    command = results.job_command("informative_resnet", 0, 200, 200, 100, "cpu", {}, None, threads=1,
                                  faithfulness="full")
    assert command.endswith("--threads 1 --faithfulness full")  # the default image count goes unsaid
    assert results.cli(["--rows", "informative_resnet_floor", "--deletion-images", "0", "--allow-dirty"]) == 2


def test_a_job_records_the_runners_revision_and_a_tree_that_changed_under_it(tmp_path: Path) -> None:
    """The revision a job records is the one its runner started from (its workers import that code);
    when the tracked files differ by the time the job starts, it says so, and the report counts it."""
    from crm_core.experiments.results_report import provenance

    kwargs = dict(row_key="informative_stage2_constant", seed=0, steps=1, test_limit=4, val_limit=4,
                  checkpoint_dir=str(tmp_path), runs_dir=str(tmp_path), device="cpu", crm_overrides={}, reuse=False,
                  threads=1)
    now = results.code_revision()
    same = results.run_job(**kwargs, revision=now)
    assert same["revision"] == now and "tree_changed" not in same
    started = "0" * 40
    changed = results.run_job(**kwargs, revision=started)
    assert changed["revision"] == started and changed["tree_changed"] == now
    assert {k: v for k, v in changed.items() if k not in ("revision", "tree_changed", "eval_s")} == \
        {k: v for k, v in same.items() if k not in ("revision", "eval_s")}
    report = {"meta": {"command": "c", "jobs": 1}, "jobs": [same, changed]}
    assert provenance(report)["dirty_runs"] == (2 if "+dirty" in now else 1)


def test_drop_rows_removes_their_jobs_and_records_the_removal_as_a_part(tmp_path: Path) -> None:
    jobs = [{"row": row, "seed": s, "miou": 0.5 + 0.01 * s, "accuracy": 0.9} for s in range(3)
            for row in ("informative_resnet", "informative_efficientnet_b0_drs")]
    report = _report(jobs)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    assert results.cli(["--json", str(path), "--out", "", "--drop-rows", "informative_efficientnet_b0_drs"]) == 0
    kept = json.loads(path.read_text())
    assert {j["row"] for j in kept["jobs"]} == {"informative_resnet"} and len(kept["jobs"]) == 3
    assert "informative_efficientnet_b0_drs" not in kept["summary"]["rows"]
    assert kept["meta"]["dropped"] == {"informative_efficientnet_b0_drs": 3}
    parts = results_report.parts_of(kept["meta"])
    assert parts[-1]["command"] == "python -m crm_core.experiments.results --drop-rows informative_efficientnet_b0_drs"
    assert len(parts) == len(results_report.parts_of(report["meta"])) + 1
    assert results.cli(["--json", str(path), "--out", "", "--drop-rows", "no_such_row"]) == 2
    assert json.loads(path.read_text()) == kept  # a refused removal writes nothing


def test_a_cam_is_paired_with_each_map_from_no_model_under_its_own_classifier() -> None:
    """Per seed, the CAM's PxAP / Average Drop against the references scored beside it: the paired
    difference is the mean of the per-seed differences, tested as every comparison is."""
    jobs = [{"row": "informative_resnet", "seed": s, "pxap": 0.5 + 0.01 * s, "average_drop": 4.0 + s,
             "references": {"intensity": {"pxap": 0.45 + 0.012 * s, "average_drop": 4.0 + s},
                            "random": {"pxap": 0.2, "average_drop": 50.0 - s}}} for s in range(4)]
    versus = results_summary.reference_comparisons(jobs, "informative_resnet")
    assert versus["intensity"]["pxap"]["diff"] == pytest.approx(0.05 - 0.002 * 1.5)
    assert versus["intensity"]["pxap"]["n"] == 4 and versus["intensity"]["pxap"]["effect"]
    assert versus["intensity"]["average_drop"]["diff"] == 0.0 and not versus["intensity"]["average_drop"]["effect"]
    assert versus["random"]["average_drop"]["diff"] == pytest.approx(-46.0 + 3.0)
    summary = results_summary.summarise(jobs)
    assert summary["rows"]["informative_resnet"]["vs_references"] == versus
    lines = "\n".join(results_report.faithfulness_table(summary, "informative"))
    assert "resnet − brightness under its classifier (exploratory): PxAP" in lines
