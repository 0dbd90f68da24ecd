"""``python -m crm_core.experiments.bench``: parse the options, run the sections, print and write the report."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from crm_core.experiments.bench.report import format_summary, format_tables, machine_line, write_markdown
from crm_core.experiments.bench.suite import ALL_SECTIONS, BenchConfig, run_all
from crm_core.experiments.bench.throughput import train_worker


def get_args_parser() -> argparse.ArgumentParser:
    """Every option of ``python -m crm_core.experiments.bench`` (the hidden ``--worker-*`` ones start the
    training subprocess of sections 3 and 6; ``--tiny`` runs toy sizes for the tests)."""
    p = argparse.ArgumentParser(prog="python -m crm_core.experiments.bench",
                                description="Side-by-side benchmarks of CRM Lab on this machine.")
    p.add_argument("--quick", action="store_true", help="small repeat counts, only the summary's levers")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the tables (+ machine) as Markdown")
    p.add_argument("--sections", nargs="+", default=list(BenchConfig.sections), choices=ALL_SECTIONS,
                   help="benchmark sections to run; voc_training (not run by default) trains resnet50 at 448 px, "
                        "batch 16, plain and with CRM, on a VOC-sized folder it writes (1,464 JPEGs at 500x375): "
                        "for a GPU (--device cuda)")
    p.add_argument("--device", default="cpu", help="device of the CRM-step, stage-2 and VOC-training sections (cpu | cuda)")
    p.add_argument("--repeats", type=int, default=None, help="timing repeats per candidate")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # toy sizes, for tests
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads in this process (default: torch's)")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="measure nothing: re-render the tables of an earlier --json file (with --markdown)")
    # internal: the training subprocess of sections 3 and 6
    p.add_argument("--worker-train", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-warmup", type=int, default=1, help=argparse.SUPPRESS)
    return p


def cli(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one training worker) and print the tables; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    if args.worker_train is not None:
        train_worker(json.loads(args.worker_train), args.worker_out, args.worker_warmup)
        return 0
    os.environ.setdefault("CRM_LAB_NO_PROGRESS", "1")
    command = "python -m crm_core.experiments.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        command = doc["details"].get("command", command)
    else:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
            os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the training / dashboard subprocesses too
        doc = run_all(BenchConfig(quick=args.quick, sections=tuple(args.sections), repeats=args.repeats,
                                  compile=args.compile, tiny=args.tiny, device=args.device))
        doc["details"]["command"] = command
    if args.json and not args.from_json:  # first, so a formatting problem never loses a long run
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
    print(f"Machine: {machine_line(doc['details']['machine'])}\n")
    print(format_tables(doc))
    print(format_summary(doc))
    if args.markdown:
        write_markdown(doc, args.markdown, command)
    return 0
