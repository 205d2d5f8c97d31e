"""Labels in batches: 1,000 specimen labels to PDF (goal ≤ 2 s) and 10,000 to ZPL (goal ≤ 1 s).

No database: the labels are built from label data, as a print job gets them from read models.
`python -m benchmarks.labels_bench` prints the table; `run()` returns the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date

from benchmarks import report
from benchmarks.measure import Result, median, progress
from biobank.domain.identifiers import format_specimen_id
from labels import SpecimenLabel, render_pdf, render_zpl, template

RUNS = 3
PDF_LABELS, PDF_GOAL_SECONDS = 1_000, 2.0
ZPL_LABELS, ZPL_GOAL_SECONDS = 10_000, 1.0


def run(*, runs: int = RUNS) -> list[Result]:
    labels = _labels(ZPL_LABELS)
    render_pdf(labels[:10], template("letter-4x20"))  # imports and caches: a one-off cost
    results = [
        _result(
            f"labels: {PDF_LABELS:,} to a PDF sheet",
            lambda: render_pdf(labels[:PDF_LABELS], template("letter-4x20")),
            goal=PDF_GOAL_SECONDS,
            how="render_pdf on letter-4x20 (13 sheets), QR modules as vector rectangles",
            runs=runs,
        ),
        _result(
            f"labels: {PDF_LABELS:,} to a PDF roll",
            lambda: render_pdf(labels[:PDF_LABELS], template("cryo-1.05x0.5in")),
            goal=PDF_GOAL_SECONDS,
            how="render_pdf on cryo-1.05x0.5in, one page a label (a thermal printer's driver)",
            runs=runs,
        ),
    ]
    results += [
        _result(
            f"labels: {ZPL_LABELS:,} to ZPL at {dpi} dpi",
            lambda dpi=dpi: render_zpl(labels, template("cryo-1.05x0.5in"), dpi=dpi),
            goal=ZPL_GOAL_SECONDS,
            how="render_zpl on cryo-1.05x0.5in; the printer draws the QR code (^BQ)",
            runs=runs,
        )
        for dpi in (203, 300)
    ]
    return results


def _labels(count: int) -> list[SpecimenLabel]:
    """Specimen labels with issuable IDs, type, collection date and pseudonym."""
    ids = (format_specimen_id("SLE", serial) for serial in range(1, 2 * count))
    return [
        SpecimenLabel(code, "SER", date(2025, 3, 1), participant="SLE-7KQ3MX")
        for code in ids
        if code
    ][:count]


def _result(
    name: str, action: Callable[[], str | bytes], *, goal: float, how: str, runs: int
) -> Result:
    progress(name)
    times, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        size = len(action())
        times.append(time.perf_counter() - started)
    return Result(
        benchmark=name,
        engine="none",
        kind="latency",
        median=median(times),
        p99=None,
        baseline=None,
        goal=f"≤ {goal:g} s",
        passed=median(times) <= goal,
        how=how,
        details={"runs": times, "output_bytes": size},
    )


if __name__ == "__main__":
    print(report.table(run()))
