"""What a `biobank` command costs to start: the CPU time (user + system) of a new process for
`biobank scan ID` on the embedded database holding the demo cohort, `biobank --help` and a
group's help (`biobank specimen --help`), each beside `python -c "import sqlalchemy"`.

A script that scans a thousand tubes starts a thousand processes, and several terminals share
a machine: CPU time, not wall time, is what they pay for, and what another process's load does
not change much. The commands and the baseline run in rounds, one of each per round, so a load
that comes and goes weighs on both alike; the first round fills the file cache and is not
counted. Goals: the scan ≤ 1.5× the baseline's CPU, either help ≤ 0.3 s (the help imports no
database layer: `tests/test_cli_startup.py`).

`python -m benchmarks.cli_bench` prints the table; `run()` returns the results.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlmodel import select

from benchmarks import report
from benchmarks.measure import Result, median, progress
from biobank.bootstrap import open_database
from biobank.models import Specimen
from biobank.services.demo import seed_demo
from biobank.services.identity import actor_for
from biobank.services.users import BOOTSTRAP_ADMIN
from biobank.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 7
SCAN_GOAL = 1.5  # times the baseline's CPU
HELP_GOAL = 0.3  # seconds of CPU
TECHNICIAN = "tech"  # the demo cohort's technician (the embedded database trusts a name)
BASELINE = [sys.executable, "-c", "import sqlalchemy"]
BIOBANK = [sys.executable, "-m", "biobank"]
HELP, GROUP_HELP = ["--help"], ["specimen", "--help"]


def run(*, rounds: int = ROUNDS) -> list[Result]:
    progress(f"CLI start-up x {rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="biobank_cli_") as folder:
        env = os.environ | {
            "BIOBANK_DATABASE_URL": f"sqlite:///{Path(folder) / 'biobank.db'}",
            "BIOBANK_CONFIG": str(Path(folder) / "config.toml"),
        }
        scanned = _seeded(env["BIOBANK_DATABASE_URL"])
        commands = {
            "baseline": BASELINE,
            "scan": [*BIOBANK, "-u", TECHNICIAN, "scan", scanned],
            "help": [*BIOBANK, *HELP],
            "group help": [*BIOBANK, *GROUP_HELP],
        }
        _round(commands, env)  # fills the file cache: not counted
        loads = [os.getloadavg()[0]]
        measured: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, seconds in _round(commands, env).items():
                measured[name].append(seconds)
            loads.append(os.getloadavg()[0])
    baseline = median(measured["baseline"])
    per_round = [s / b for s, b in zip(measured["scan"], measured["baseline"], strict=True)]
    common = {"baseline_runs": measured["baseline"], "load_average": loads}
    how = (
        f"CPU seconds (user + system) of a new process, median of {rounds} rounds, each "
        'round running the command and the baseline once; baseline: `python -c "import '
        'sqlalchemy"`'
    )
    scan_median = median(measured["scan"])
    return [
        Result(
            benchmark="CLI: scan ID (CPU)",
            engine="sqlite",
            kind="latency",
            median=scan_median,
            p99=None,
            baseline=baseline,
            goal=f"≤ {SCAN_GOAL:g}× import sqlalchemy",
            passed=scan_median <= SCAN_GOAL * baseline,
            how=f"`biobank scan ID` on the demo cohort's embedded database; {how}",
            details={"runs": measured["scan"], "round_ratios": per_round, **common},
        ),
        *(
            _help_result(name, " ".join(words), measured[key], baseline, how, common)
            for name, words, key in (
                ("CLI: --help (CPU)", HELP, "help"),
                ("CLI: group --help (CPU)", GROUP_HELP, "group help"),
            )
        ),
    ]


def _help_result(
    benchmark: str, words: str, runs: list[float], baseline: float, how: str, common: dict
) -> Result:
    return Result(
        benchmark=benchmark, engine="none", kind="latency", median=median(runs), p99=None,
        baseline=baseline, goal=f"≤ {HELP_GOAL:g} s", passed=median(runs) <= HELP_GOAL,
        how=f"`biobank {words}`; {how}", details={"runs": runs, **common},
    )  # fmt: skip


def _seeded(url: str) -> str:
    """The demo cohort in a new embedded database; the accession ID of one of its tubes."""
    database = open_database(Settings(database_url=url))
    with database.unit_of_work() as session:
        admin = actor_for(session, username=BOOTSTRAP_ADMIN, workstation="benchmark")
        seed_demo(session, actor=admin, participants=20, with_specimens=True)
        scanned = session.exec(select(Specimen.accession_id).limit(1)).one()
    database.engine.dispose()
    return scanned


def _round(commands: dict[str, list[str]], env: dict[str, str]) -> dict[str, float]:
    return {name: _cpu_seconds(argv, env) for name, argv in commands.items()}


def _cpu_seconds(argv: list[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one child process run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])} failed:\n{done.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cli_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"default {ROUNDS}")
    args = parser.parse_args(argv)
    print(report.table(run(rounds=args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
