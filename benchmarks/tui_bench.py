"""The workstation's speed: cold start to the sign-in screen (goal ≤ 1 s), and on the inventory
to the home screen signed in, ready to take a scan, its counts shown (goal ≤ 1 s), a scan to the
specimen detail on screen and a scanned box's grid (goal: p99 ≤ 50 ms at 1M specimens, as every
view's: a technician feels the slow scans, not the typical one). A scan to the detail is timed
twice: from the home screen, which brings back the specimen screen kept from the last scan
(`BiobankApp.open_view`; the first scan builds it, among the warm-up scans), and tube after
tube with the specimen screen open (how a rack of tubes is worked through). Boxes are scanned
from the home screen, likewise. A long pull list (10,000 lines) is worked through by scanning
its tubes, each until its line is ticked.

The application runs headless (`App.run_test`, as in the tests). A view counts as shown once
its data has arrived and the screen has refreshed after it (`call_after_refresh`), so the thread
workers' database work, the hand-off to the UI thread, layout and rendering are all inside the
figure. The baseline of a view is the same service calls in the same units of work without the
UI, run after each view while the app is idle; the baseline of a cold start is a bare
interpreter start; the two take turns.

`python -m benchmarks.tui_bench` builds the inventory as `python -m benchmarks` does and prints
the table; `cold_start()` and `run()` return the results.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import NamedTuple

from textual.screen import Screen
from textual.widget import Widget

from benchmarks import report
from benchmarks.databases import ENGINES, BenchDatabase, Unreachable, bench_database
from benchmarks.dataset import BOX_GRID, Dataset, build
from benchmarks.measure import Result, interleaved, median, p99, progress
from biobank.bootstrap import OpenDatabase, open_database
from biobank.db import make_engine
from biobank.domain.permissions import Actor
from biobank.services import pulls, users, withdrawals
from biobank.services.demo import seed_demo
from biobank.services.identity import actor_for
from biobank.services.scan import resolve_scan
from biobank.services.specimens import show_specimen
from biobank.services.storage import box_view, storage_tree
from biobank.services.users import BOOTSTRAP_ADMIN
from biobank.settings import Settings
from tui.app import BiobankApp
from tui.screens.box import BoxScreen
from tui.screens.pull_list import PullListScreen
from tui.screens.specimen import SpecimenScreen
from tui.widgets.box_grid import BoxGrid
from tui.widgets.line_table import LineTable

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIZE, QUICK_SIZE = 1_000_000, 20_000
STARTS = 7
SCANS = 200  # a p99 of fewer views is only the slowest one
BOXES = 100
WARMUP = 5
PULL_LINES, QUICK_PULL_LINES = 10_000, 500
START_GOAL, VIEW_GOAL = 1.0, 0.050  # seconds; a view's goal holds for its p99, not its median
VIEW_GOAL_TEXT = f"p99 ≤ {VIEW_GOAL * 1000:g} ms"
SIZE = (80, 24)
POLL = 0.0005  # seconds between looks at the screen
WORKSTATION = "benchmark"

# What `biobank` does before the sign-in screen shows (`biobank.cli.tui`); prints the moment
# it has, then the moment the database it opens behind that screen is open. Given a username
# and PIN, it signs in the moment the sign-in screen shows (as if typed at once) and prints
# the moment the home screen has shown, signed in, ready to take a scan, and the moment it has
# shown the inventory's counts.
COLD_START = """
import asyncio, sys, time
from functools import partial
import biobank.cli  # the entry point's own imports
from biobank.cli.common import CliState
from tui.app import BiobankApp
from tui.screens.sign_in import SignInScreen

cli = CliState()
app = BiobankApp(settings=cli.settings, database=partial(cli.database, announce=False))
moments = []

async def refreshed(widget):
    done = asyncio.Event()
    widget.call_after_refresh(done.set)
    await done.wait()

async def shown(pilot):
    while not isinstance(app.screen, SignInScreen):
        await asyncio.sleep(0.001)
    await refreshed(app.screen)
    moments.append(time.monotonic())
    opened = asyncio.create_task(asyncio.to_thread(lambda: app.database))
    opened.add_done_callback(lambda _: moments.insert(1, time.monotonic()))
    if len(sys.argv) > 1:
        from tui.screens.home import HomeScreen

        def overview():
            home = isinstance(app.screen, HomeScreen)
            found = list(app.screen.query("#overview")) if home else []
            return found[0] if found else None

        app.sign_in(*sys.argv[1:])
        while overview() is None:
            await asyncio.sleep(0.001)
        await refreshed(overview())
        home = time.monotonic()
        while "Studies:" not in str(overview().content):
            await asyncio.sleep(0.001)
        await refreshed(overview())
        moments.extend([home, time.monotonic()])
    await opened
    app.exit()

app.run(headless=True, auto_pilot=shown, size=(80, 24))
print(*moments)
"""
BARE_START = "import time; print(time.monotonic())"
PIN = "2468"  # the benchmark technician's, set for the cold start on the inventory


# --- cold start ---------------------------------------------------------------------------


def cold_start(*, runs: int = STARTS) -> Result:
    """A new process, the embedded database holding the demo cohort, to the sign-in screen."""
    progress(f"TUI cold start x {runs}")
    with tempfile.TemporaryDirectory(prefix="biobank_tui_") as folder:
        env = _environment(f"sqlite:///{Path(folder) / 'biobank.db'}", Path(folder))
        database = open_database(Settings(database_url=env["BIOBANK_DATABASE_URL"]))
        with database.unit_of_work() as session:
            admin = actor_for(session, username=BOOTSTRAP_ADMIN, workstation=WORKSTATION)
            seed_demo(session, actor=admin, participants=20)
        database.engine.dispose()
        starts, cpu, bare = _starts_in_turns(env, runs=runs)
    shown = [start[0] for start in starts]
    return Result(
        benchmark="TUI: cold start to sign-in",
        engine="sqlite",
        kind="latency",
        median=median(shown),
        p99=None,
        baseline=median(bare),
        goal=f"≤ {START_GOAL:g} s",
        passed=median(shown) <= START_GOAL,
        how="a new `python -c` process starting the TUI as `biobank` does, headless, until "
        "the sign-in screen has refreshed (the embedded database is opened behind it, in a "
        f"thread: `database_open` is when it was ready); median of {runs}; baseline: a bare "
        "interpreter start, the two taking turns",
        details={
            "runs": shown,
            "database_open": [start[1] for start in starts],
            "cpu_seconds": cpu,
            "baseline_runs": bare,
            "load_average": os.getloadavg()[0],
        },
    )


def cold_start_on_inventory(db: BenchDatabase, dataset: Dataset, *, runs: int = STARTS) -> Result:
    """A new process on the inventory `dataset` built, signing in at once, to the home screen
    showing the inventory's counts (goal ≤ 1 s, as to the sign-in screen)."""
    progress(f"[{db.engine_name}] TUI cold start to the home screen x {runs}")
    database = open_database(Settings(database_url=db.url))
    with database.unit_of_work() as session:
        admin = actor_for(session, username=BOOTSTRAP_ADMIN, workstation=WORKSTATION)
        users.set_pin(session, actor=admin, username=dataset.technician.username, pin=PIN)
    database.engine.dispose()
    with tempfile.TemporaryDirectory(prefix="biobank_tui_") as folder:
        env = _environment(db.url, Path(folder))
        user = dataset.technician.username
        starts, cpu, bare = _starts_in_turns(env, runs=runs, sign_in=(user, PIN))
    sign_in, opened, home, counted = (list(moments) for moments in zip(*starts, strict=True))
    return Result(
        benchmark="TUI: cold start to a scan-ready home",
        engine=db.engine_name,
        kind="latency",
        median=median(counted),
        p99=None,
        baseline=median(bare),
        goal=f"≤ {START_GOAL:g} s",
        passed=median(counted) <= START_GOAL,
        how="a new `python -c` process starting the TUI as `biobank` does on the inventory, "
        "headless, signing in (name and PIN) the moment the sign-in screen has refreshed, "
        "until the home screen, ready to take a scan, has shown the inventory's counts "
        "(`sign_in`, `database_open` and `home` are when the sign-in screen showed, the "
        "database was open and the home screen showed, before its counts; `cpu_seconds` the "
        f"process's CPU time); median of {runs}; baseline: a bare interpreter start, the two "
        "taking turns",
        details={
            "runs": counted,
            "sign_in": sign_in,
            "database_open": opened,
            "home": home,
            "cpu_seconds": cpu,
            "baseline_runs": bare,
            "load_average": os.getloadavg()[0],
        },
    )


def _environment(database_url: str, folder: Path) -> dict[str, str]:
    """The database and a config of its own; the bytecode cached in `folder`, as an installed
    application's is (a start that compiled every module, as Python told to write no
    bytecode does, would time the compiler)."""
    kept = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    return kept | {
        "BIOBANK_DATABASE_URL": database_url,
        "BIOBANK_CONFIG": str(folder / "config.toml"),
        "PYTHONPYCACHEPREFIX": str(folder / "bytecode"),
    }


def _starts_in_turns(
    env: dict[str, str], *, runs: int, sign_in: tuple[str, str] = ("", "")
) -> tuple[list[list[float]], list[float], list[float]]:
    """The TUI's cold starts (the moments each printed, and its CPU seconds) and bare
    interpreter starts, taking turns, each round starting with the other; a first start, not
    counted, fills the file cache and the bytecode cache."""
    arguments = [argument for argument in sign_in if argument]
    _started(COLD_START, env, arguments)
    starts: list[list[float]] = []
    cpu: list[float] = []
    bare: list[float] = []
    for pair in interleaved(runs, "tui", "bare"):
        for which in pair:
            if which == "tui":
                moments, seconds = _started(COLD_START, env, arguments)
                starts.append(moments)
                cpu.append(seconds)
            else:
                bare.append(_started(BARE_START, env, [])[0][0])
    return starts, cpu, bare


def _started(script: str, env: dict[str, str], arguments: list[str]) -> tuple[list[float], float]:
    """Seconds from spawning `python -c script` to each moment it prints (CLOCK_MONOTONIC is
    one clock for every process), and the CPU seconds the process took."""
    used = _children_cpu()
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, *arguments], env=env, cwd=ROOT, capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the cold start failed:\n{done.stderr}")
    return [float(moment) - began for moment in done.stdout.split()], _children_cpu() - used


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- views on a large inventory -------------------------------------------------------------


def run(
    db: BenchDatabase,
    dataset: Dataset,
    *,
    rng: random.Random,
    scans: int = SCANS,
    boxes: int = BOXES,
) -> list[Result]:
    """Scan → specimen detail, and a box's grid, on the inventory `dataset` built."""
    settings = Settings(database_url=db.url, workstation=WORKSTATION)
    database = open_database(settings)
    actor = dataset.technician
    codes = dataset.random_accession_ids(scans + WARMUP, rng)
    with database.unit_of_work(readonly=True) as session:
        tree = storage_tree(session, actor=actor, root=dataset.freezer)
    barcodes = rng.sample([n.unit.barcode for n in tree if n.unit.holds_specimens], boxes + WARMUP)

    progress(f"[{db.engine_name}] TUI: {scans} scans, {boxes} box grids")
    app = BiobankApp(settings=settings, database=database)
    scan_views, next_views, grid_views = asyncio.run(
        _drive(
            app,
            actor,
            codes,
            barcodes,
            detail=lambda code: _detail_services(database, actor, code),
            grid=lambda barcode: _grid_services(database, actor, barcode),
        )
    )
    database.engine.dispose()
    return [
        _view_result(
            "TUI: scan → specimen detail",
            db,
            scan_views,
            how=f"handle_scan of {scans} random existing IDs from the home screen (what Enter "
            "after a scanner's burst starts) until the specimen screen, kept from the last "
            "scan, has shown the detail; "
            "baseline: resolve_scan and show_specimen, each in its read-only unit of work, after "
            "each view",
        ),
        _view_result(
            "TUI: next tube → its detail",
            db,
            next_views,
            how=f"handle_scan of the same {scans} IDs one after another with the specimen "
            "screen open, until it shows the scanned tube's detail; baseline: resolve_scan and "
            "show_specimen, each in its read-only unit of work, after each view",
        ),
        _view_result(
            "TUI: scan → box grid",
            db,
            grid_views,
            how=f"handle_scan of {boxes} random {BOX_GRID[0]}x{BOX_GRID[1]} boxes of the freezer "
            "from the home screen (a box label scanned) until its grid, in the box screen kept "
            "from the last scan, has rendered; baseline: "
            "resolve_scan and box_view, each in its read-only unit of work, after each view",
        ),
    ]


def _view_result(name: str, db: BenchDatabase, views: list[View], *, how: str) -> Result:
    times = [view.seconds for view in views]
    services = [view.baseline for view in views]
    return Result(
        benchmark=name,
        engine=db.engine_name,
        kind="latency",
        median=median(times),
        p99=p99(times),
        baseline=median(services),
        goal=VIEW_GOAL_TEXT,
        passed=p99(times) <= VIEW_GOAL,
        how=how,
        details={
            "views": len(times),
            "baseline_p99": p99(services),
            "slowest": _slowest(views),
        },
    )


async def _drive(
    app: BiobankApp,
    actor: Actor,
    codes: list[str],
    barcodes: list[str],
    *,
    detail: Callable[[str], object],
    grid: Callable[[str], object],
) -> tuple[list[View], list[View], list[View]]:
    async with app.run_test(size=SIZE) as pilot:
        app.signed_in(actor)
        await _idle(app, pilot)

        def detail_of(code: str) -> Callable[[Screen], Widget | None]:
            def shown(screen: Screen) -> Widget | None:
                ready = isinstance(screen, SpecimenScreen) and screen.version is not None
                return (
                    screen.query_one("#detail") if ready and screen.accession_id == code else None
                )

            return shown

        def grid_of(screen: Screen) -> Widget | None:
            grids = screen.query(BoxGrid) if isinstance(screen, BoxScreen) else ()
            return grids.first() if grids and grids.first().is_mounted else None

        scans = [
            await _until_shown(app, pilot, code, detail_of(code), lambda code=code: detail(code))
            for code in codes
        ]
        grids = [
            await _until_shown(app, pilot, barcode, grid_of, lambda code=barcode: grid(code))
            for barcode in barcodes
        ]
        tubes = [
            await _until_shown(
                app, pilot, code, detail_of(code), lambda code=code: detail(code), home=False
            )
            for code in codes
        ]
        await _home(app, pilot)
    return scans[WARMUP:], tubes[WARMUP:], grids[WARMUP:]


class View(NamedTuple):
    """One view, timed: in all, until its data was on the screen (the worker's database work,
    the hand-off to the UI thread, routing, mounting), and the garbage collector's passes
    meanwhile (the rest is layout and paint); then its baseline's seconds. The slowest views'
    phases go into a result's details, so a slow p99 can be traced from the run that measured
    it."""

    seconds: float
    until_data: float
    collections: int
    baseline: float


async def _until_shown(
    app: BiobankApp,
    pilot,
    scanned: str,
    shown: Callable[[Screen], Widget | None],
    baseline: Callable[[], object],
    *,
    home: bool = True,
) -> View:
    """A scan until the widget `shown` finds has refreshed; then back home, unless the next
    view is to be shown from this one; then, the app idle, `baseline` (the same service calls
    without the UI): the two take turns view by view, so the machine's load weighs on both
    alike."""
    collections = _collections()
    began = time.perf_counter()
    app.handle_scan(scanned)
    while (widget := shown(app.screen)) is None:
        await asyncio.sleep(POLL)
    until_data = time.perf_counter() - began
    refreshed = asyncio.Event()
    widget.call_after_refresh(refreshed.set)
    await refreshed.wait()
    seconds, collected = time.perf_counter() - began, _collections() - collections
    if home:
        await _home(app, pilot)
    else:
        await _idle(app, pilot)
    started = time.perf_counter()
    baseline()
    return View(seconds, until_data, collected, time.perf_counter() - started)


def _collections() -> int:
    return sum(generation["collections"] for generation in gc.get_stats())


def _slowest(views: list[View], count: int = 3) -> list[dict[str, float]]:
    return [
        {
            "ms": round(view.seconds * 1000, 1),
            "until_data_ms": round(view.until_data * 1000, 1),
            "gc_passes": view.collections,
        }
        for view in sorted(views, reverse=True)[:count]
    ]


async def _home(app: BiobankApp, pilot) -> None:
    app.pop_screen()
    await _idle(app, pilot)


async def _idle(app: BiobankApp, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()


def _detail_services(database: OpenDatabase, actor: Actor, code: str) -> None:
    with database.unit_of_work(readonly=True) as session:
        found = resolve_scan(session, actor=actor, scanned=code)
    with database.unit_of_work(readonly=True) as session:
        show_specimen(session, actor=actor, accession=found.specimen.accession_id)


def _grid_services(database: OpenDatabase, actor: Actor, barcode: str) -> None:
    with database.unit_of_work(readonly=True) as session:
        resolve_scan(session, actor=actor, scanned=barcode)
    with database.unit_of_work(readonly=True) as session:
        box_view(session, actor=actor, barcode=barcode)


# --- a long pull list ------------------------------------------------------------------------


def pull_list(
    db: BenchDatabase,
    dataset: Dataset,
    *,
    rng: random.Random,
    lines: int = PULL_LINES,
    scans: int = SCANS,
) -> Result:
    """Scans working through a pull list of about `lines` tubes. It withdraws participants
    (`destroy`) and disposes tubes: run it after everything else on the inventory."""
    settings = Settings(database_url=db.url, workstation=WORKSTATION)
    database = open_database(settings)
    actor = dataset.technician
    progress(f"[{db.engine_name}] TUI: a pull list of {lines:,} lines, {scans} scans")
    with database.unit_of_work() as session:
        admin = actor_for(session, username=BOOTSTRAP_ADMIN, workstation=WORKSTATION)
        listed = 0
        for code in dataset.participants:
            if listed >= lines:
                break
            withdrawal, _ = withdrawals.withdraw(
                session, actor=admin, participant=code, withdrawn_on=date.today(),
                requested_by="the participant", disposition="destroy",
            )  # fmt: skip
            listed += withdrawal.flagged
    with database.unit_of_work(readonly=True) as session:
        items = pulls.pull_list(session, actor=actor)
    codes = [item.accession_id for item in rng.sample(items, 2 * (scans + WARMUP))]
    app = BiobankApp(settings=settings, database=database)
    views = asyncio.run(
        _drive_pull_list(
            app,
            actor,
            list(zip(codes[: scans + WARMUP], codes[scans + WARMUP :], strict=True)),
            baseline=lambda code: _pull_services(database, actor, code),
        )
    )
    times = [view.seconds for view in views]
    services = [view.baseline for view in views]
    database.engine.dispose()
    return Result(
        benchmark="TUI: pull list scan → line ticked",
        engine=db.engine_name,
        kind="latency",
        median=median(times),
        p99=p99(times),
        baseline=median(services),
        goal=VIEW_GOAL_TEXT,
        passed=p99(times) <= VIEW_GOAL,
        how=f"handle_scan of {scans} random tubes of a pull list of {len(items):,} lines "
        "(participants withdrawn with `destroy`), the pull list screen open, until the tube's "
        "line shows it pulled; baseline: resolve_scan and pulls.pull of another tube of the "
        "list, each in its unit of work, after each view",
        details={
            "lines": len(items),
            "scans": len(times),
            "baseline_p99": p99(services),
            "slowest": _slowest(views),
        },
    )


async def _drive_pull_list(
    app: BiobankApp,
    actor: Actor,
    pairs: list[tuple[str, str]],
    *,
    baseline: Callable[[str], object],
) -> list[View]:
    """Each pair's first tube scanned in the pull list screen, then its second pulled by
    `baseline` (a tube pulled once is pulled)."""
    async with app.run_test(size=SIZE) as pilot:
        app.signed_in(actor)
        await _idle(app, pilot)
        app.action_pull_list()
        screen = app.screen
        assert isinstance(screen, PullListScreen)
        while not screen.items:  # the list loaded, and its table built (once)
            await asyncio.sleep(POLL)
        await _idle(app, pilot)
        table = screen.query_one(LineTable)

        def ticked(code: str) -> Callable[[Screen], Widget | None]:
            return lambda _screen: table if code in screen.pulled else None

        views = [
            await _until_shown(
                app, pilot, code, ticked(code), lambda other=other: baseline(other), home=False
            )
            for code, other in pairs
        ]
        await _home(app, pilot)
    return views[WARMUP:]


def _pull_services(database: OpenDatabase, actor: Actor, code: str) -> None:
    with database.unit_of_work(readonly=True) as session:
        found = resolve_scan(session, actor=actor, scanned=code)
    with database.unit_of_work() as session:
        pulls.pull(session, actor=actor, accession=found.specimen.accession_id)


# --- on its own -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tui_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", type=int, help=f"specimens (default {DEFAULT_SIZE:,})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_SIZE:,} specimens, a pull list of {QUICK_PULL_LINES:,} lines",
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help=", ".join(ENGINES))
    parser.add_argument("--dir", type=Path, help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=1, help="the dataset's seed (default 1)")
    args = parser.parse_args(argv)
    size = args.size or (QUICK_SIZE if args.quick else DEFAULT_SIZE)
    lines = QUICK_PULL_LINES if args.quick else PULL_LINES
    results = [cold_start()]
    try:
        for engine_name in [e.strip() for e in args.engines.split(",") if e.strip()]:
            results += _on_inventory(
                engine_name, size=size, lines=lines, directory=args.dir, seed=args.seed
            )
    except Unreachable as error:
        progress(str(error))
        return 8
    print(report.table(results))
    return 0


def _on_inventory(
    engine_name: str, *, size: int, lines: int, directory: Path | None, seed: int
) -> list[Result]:
    def say(message: str) -> None:
        progress(f"[{engine_name}] {message}")

    with bench_database(engine_name, size=size, directory=directory, keep=False) as db:
        engine = make_engine(db.url)
        say(f"building the inventory: {size:,} specimens")
        dataset = build(engine, size=size, seed=seed, progress=say)
        engine.dispose()
        rng = random.Random(seed)
        return [
            *run(db, dataset, rng=rng),
            cold_start_on_inventory(db, dataset),
            pull_list(db, dataset, rng=rng, lines=lines),
        ]


if __name__ == "__main__":
    sys.exit(main())
