"""`python -m benchmarks`: build the inventory on each engine, run every benchmark, report.

The table goes to stdout, progress to stderr; `--json` writes the results with the machine they
ran on, and `--write-readme` puts them in README.md's performance section.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import (
    allocation,
    audit_bench,
    backup_bench,
    cli_bench,
    cohort_bench,
    concurrency,
    export_bench,
    labels_bench,
    legacy,
    lookup,
    redcap_bench,
    report,
    request_bench,
    tui_bench,
)
from benchmarks.databases import ENGINES, POSTGRES_ENV, Unreachable, bench_database
from benchmarks.dataset import build
from benchmarks.measure import Result, progress
from biobank.db import make_engine

STEPS = (  # each a group of benchmarks, in the order a run takes them
    "lookup", "export", "allocation", "concurrency", "legacy", "audit", "redcap", "cohort",
    "request", "tui", "backup", "cli", "labels",
)  # fmt: skip
NO_DATABASE = ("cli", "labels")  # each makes what it needs
NO_INVENTORY = ("redcap",)  # makes fresh databases of its own beside the run's
DEFAULT_SIZE = 1_000_000
QUICK_SIZE = 20_000
MIN_SIZE = 2_000
README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass(frozen=True)
class Plan:
    """How many times each benchmark runs."""

    lookups: int
    allocations: int
    accessions: int
    import_rows: int
    scans: int  # through the TUI
    boxes: int
    starts: int
    label_runs: int
    pull_lines: int  # a pull list worked through by scanning, in the TUI
    redcap_rows: int  # records-events of a REDCap project (and a tenth, for its memory)
    request_lines: int  # tubes of a specimen request's pick list
    backup_rounds: int  # each a backup and a restore of the whole inventory, and baselines

    @classmethod
    def of(cls, quick: bool, size: int) -> Plan:
        if quick:  # for CI: a regression shows, in under two minutes for both engines
            return cls(lookups=2_000, allocations=200, accessions=100, import_rows=2_000,
                       scans=15, boxes=8, starts=3, label_runs=1,
                       pull_lines=tui_bench.QUICK_PULL_LINES, redcap_rows=2_000,
                       request_lines=request_bench.QUICK_LINES, backup_rounds=1)  # fmt: skip
        # the import grows with the inventory (a tenth of it), so its memory is seen to stay flat
        return cls(lookups=5_000, allocations=500, accessions=300,
                   import_rows=max(2_000, size // 10), scans=tui_bench.SCANS,
                   boxes=tui_bench.BOXES, starts=7, label_runs=3, pull_lines=tui_bench.PULL_LINES,
                   redcap_rows=max(2_000, size // 10),
                   request_lines=request_bench.LINES,
                   backup_rounds=backup_bench.ROUNDS)  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", type=int, help=f"specimens (default {DEFAULT_SIZE:,})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SIZE:,} specimens, fewer repetitions"
    )
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated, of {', '.join(ENGINES)} (PostgreSQL: ${POSTGRES_ENV}, default "
        "postgresql://postgres@127.0.0.1:5432/postgres as the maintenance database)",
    )
    parser.add_argument("--json", type=Path, help="write the results and machine info here")
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite README.md's performance section"
    )
    parser.add_argument(
        "--from-json", type=Path, help="run nothing: report the results of an earlier --json"
    )
    parser.add_argument(
        "--only",
        help=f"run only these comma-separated groups of benchmarks ({', '.join(STEPS)}): to "
        "measure again, after a change, what it bears on (then --rerun)",
    )
    parser.add_argument(
        "--rerun",
        type=Path,
        action="append",
        default=[],
        help="with --from-json: a later run of some benchmarks (the --json of a run with --only, "
        "or of one benchmark module), whose figures take the place of the earlier run's, marked "
        "as such; repeatable",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        help="an earlier --json run at a smaller size: add how each figure grows to the larger",
    )
    parser.add_argument("--dir", type=Path, help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--seed", type=int, default=1, help="the dataset's seed (default 1)")
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown or not engines:
        parser.error(f"--engines takes {', '.join(ENGINES)}, not {args.engines!r}")
    args.engines = engines
    args.only = [step.strip() for step in (args.only or "").split(",") if step.strip()]
    if set(args.only) - set(STEPS):
        parser.error(
            f"--only takes {', '.join(STEPS)}, not {', '.join(set(args.only) - set(STEPS))}"
        )
    if args.rerun and not args.from_json:
        parser.error("--rerun takes the place of figures in an earlier run: give --from-json")
    for given in (args.from_json, args.compare, *args.rerun):
        if given is not None and not given.is_file():
            parser.error(f"no results file {given}")
    if args.size is not None and args.size < MIN_SIZE:
        parser.error(f"--size must be at least {MIN_SIZE:,}")
    return args


def run(args: argparse.Namespace) -> tuple[dict, list[Result]]:
    size = args.size or (QUICK_SIZE if args.quick else DEFAULT_SIZE)
    plan, steps = Plan.of(args.quick, size), args.only or STEPS
    versions: dict[str, object] = {"build_seconds": {}, "load_at_start": os.getloadavg()}
    results: list[Result] = []
    on_inventory = [step for step in steps if step not in NO_DATABASE + NO_INVENTORY]
    for engine_name in args.engines if set(steps) - set(NO_DATABASE) else ():
        with bench_database(engine_name, size=size, directory=args.dir, keep=args.keep) as db:
            if engine_name == "postgres":
                versions["postgres"] = db.server_version()
            engine = make_engine(db.url)
            say = _say(engine_name)
            if on_inventory:
                say(f"building the inventory: {size:,} specimens")
                started = time.perf_counter()
                dataset = build(engine, size=size, seed=args.seed, progress=say)
                versions["build_seconds"][engine_name] = round(time.perf_counter() - started, 1)
            rng = random.Random(args.seed)
            if "lookup" in steps:
                say(f"scan lookups x {plan.lookups:,}")
                results += taken(lookup.run(db, engine, dataset, lookups=plan.lookups, rng=rng))
            if "export" in steps:
                say(
                    f"linked phenotype export x {export_bench.RUNS}, raw join x {export_bench.RUNS}"
                )
                results += taken(export_bench.run(db, dataset))
            if "allocation" in steps:
                say(f"allocations x {plan.allocations:,}, accessions x {plan.accessions:,}")
                results += taken(
                    allocation.run(
                        db,
                        engine,
                        dataset,
                        allocations=plan.allocations,
                        accessions=min(plan.accessions, dataset.free_positions // 4),
                        rng=rng,
                    )
                )
            if "concurrency" in steps:
                results += taken(concurrency.run(db, dataset, rng=rng))
            if "legacy" in steps:
                say(f"legacy import of {plan.import_rows:,} rows")
                results += taken(legacy.run(db, engine, dataset, rows=plan.import_rows, say=say))
            if "audit" in steps:
                stall_rows = plan.import_rows if args.quick else audit_bench.STALL_ROWS
                say(f"audit chain: verify, and accessions during imports of {stall_rows:,} rows")
                rounds, quiet = (1, 10) if args.quick else (3, 50)
                results += taken(
                    audit_bench.run(
                        db,
                        engine,
                        dataset,
                        import_rows=stall_rows,
                        rounds=rounds,
                        quiet=quiet,
                        rng=rng,
                        say=say,
                    )
                )
            if "redcap" in steps:
                say(f"REDCap import of {plan.redcap_rows:,} records-events, into fresh databases")
                results += taken(redcap_bench.run(db, rows=plan.redcap_rows, say=say))
            if "cohort" in steps:
                say(f"cohort preview with phenotype conditions x {cohort_bench.RUNS}")
                results += taken(cohort_bench.run(db, engine, dataset))
            if "request" in steps:
                say(f"a specimen request of {plan.request_lines:,} tubes: pick list and scans")
                results += taken(
                    request_bench.run(
                        db, engine, dataset, lines=plan.request_lines, scans=plan.scans, rng=rng
                    )
                )
            if "tui" in steps:
                say("TUI views")
                results += taken(
                    tui_bench.run(db, dataset, rng=rng, scans=plan.scans, boxes=plan.boxes)
                )
                results += taken([tui_bench.cold_start_on_inventory(db, dataset, runs=plan.starts)])
                say(f"TUI pull list of {plan.pull_lines:,} lines")  # last: it disposes tubes
                results += taken(
                    [
                        tui_bench.pull_list(
                            db, dataset, rng=rng, lines=plan.pull_lines, scans=plan.scans
                        )
                    ]
                )
            if "backup" in steps:
                results += taken(backup_bench.run(db, rounds=plan.backup_rounds, say=say))
            engine.dispose()
    if "sqlite" in args.engines and "tui" in steps:
        results += taken([tui_bench.cold_start(runs=plan.starts)])
    if "sqlite" in args.engines and "cli" in steps:
        results += taken(cli_bench.run(rounds=plan.starts))
    if "labels" in steps:
        progress("labels")
        results += taken(labels_bench.run(runs=plan.label_runs))
    info = report.machine(size=size, seed=args.seed, quick=args.quick, versions=versions)
    return info, results


def taken(results: list[Result]) -> list[Result]:
    """Results just measured, each with the machine's one-minute load average as it was
    taken (the machine may be shared: other work skews a figure, and says by how much)."""
    for result in results:
        result.details.setdefault("load_average", round(os.getloadavg()[0], 2))
    return results


def _say(engine_name: str):
    return lambda message: progress(f"[{engine_name}] {message}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.from_json:
        info, results = report.read_json(args.from_json)
        results = report.rerun(results, [report.read_json(path) for path in args.rerun])
        if args.json:
            report.write_json(args.json, info, results)
            progress(f"wrote {args.json}")
    else:
        try:
            info, results = run(args)
        except Unreachable as error:
            progress(str(error))
            return 8
        if args.json:
            report.write_json(args.json, info, results)
            progress(f"wrote {args.json}")
    smaller = report.read_json(args.compare) if args.compare else None
    print(report.table(results))
    if smaller is not None:
        print()
        print(report.growth_table(smaller, (info, results)))
    if args.write_readme:
        report.write_readme(README, info, results, smaller)
    for miss in report.missing_notes(results):
        progress(f"missed, and no note in benchmarks/report.py: {miss.benchmark} ({miss.engine})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
