"""The benchmark report: how figures grow from a smaller inventory to a larger, and the README
section that shows it."""

from benchmarks import report
from benchmarks.measure import Result


def _run(size: int, lookup: float, export: float, memory: float) -> report.Run:
    info = {"size": size, "date": "2026-11-23T00:00:00+00:00"}
    results = [
        Result("scan lookup (one session)", "sqlite", "latency", lookup, None, None, None, None),
        Result("linked export to CSV", "sqlite", "throughput", export, None, 1.0, None, None),
        Result("linked export peak memory", "sqlite", "memory", memory, None, None, None, None),
        Result("TUI: cold start to sign-in", "sqlite", "latency", 0.5, None, None, None, None),
        Result("labels: 1,000 to a PDF sheet", "none", "latency", 1.0, None, None, None, None),
    ]
    return info, results


def test_growth_is_the_cost_of_one_item_per_ten_times_more_specimens():
    smaller = _run(100_000, lookup=100e-6, export=10_000, memory=50.0)
    larger = _run(1_000_000, lookup=150e-6, export=8_000, memory=50.0)
    rows = {(r[0], r[1]): r for r in report.growth_rows(smaller, larger)}
    # the workstation's start and the labels do not depend on the inventory
    assert set(rows) == {
        ("scan lookup (one session)", "sqlite"),
        ("linked export to CSV", "sqlite"),
        ("linked export peak memory", "sqlite"),
    }
    assert rows[("scan lookup (one session)", "sqlite")][2:] == (
        "100 µs", "150 µs", "1.50×", "225 µs",
    )  # fmt: skip
    # a rate that falls is a cost that grows: 10,000/s → 8,000/s is 1.25× per item
    assert rows[("linked export to CSV", "sqlite")][2:] == (
        "10,000/s", "8,000/s", "1.25×", "6,400/s",
    )  # fmt: skip
    assert rows[("linked export peak memory", "sqlite")][4] == "1.00×"  # flat


def test_growth_over_two_decades_is_given_per_decade():
    rows = report.growth_rows(_run(10_000, 1e-3, 1, 1), _run(1_000_000, 4e-3, 1, 1))
    assert rows[0][4] == "2.00×" and rows[0][5] == "8.0 ms"


def test_the_readme_section_carries_the_growth_table_when_given_a_smaller_run():
    smaller, larger = _run(100_000, 1e-4, 10, 5), _run(1_000_000, 2e-4, 5, 5)
    info = larger[0] | {
        "date": "2026-11-23T00:00:00+00:00", "quick": False, "cpu": "cpu", "cores": 2,
        "ram_gb": 4, "load_at_start": [0.1], "load_at_end": [0.2], "python": "3.11",
        "sqlite": "3.40",
    }  # fmt: skip
    section = report.readme_section(info, larger[1], smaller)
    assert "| benchmark | engine | at 100,000 | at 1,000,000 | cost per 10× |" in section
    assert "| scan lookup (one session) | sqlite | 100 µs | 200 µs | 2.00× | 400 µs |" in section
    assert "at 100,000" not in report.readme_section(info, larger[1])


def test_each_figure_shows_the_load_it_was_taken_under():
    loaded = Result("scan lookup (one session)", "sqlite", "latency", 1e-4, None, 2e-5, "≤ 5× raw",
                    True, details={"load_average": 2.345})  # fmt: skip
    unrecorded = Result("labels: 1,000 to a PDF sheet", "none", "latency", 1.0, None, None, None,
                        None)  # fmt: skip
    assert report.COLUMNS[-1] == "load"
    rounds = Result("restore (whole database)", "sqlite", "latency", 30.0, None, 15.0, None,
                    None, details={"load_average": [0.9, 1.04, 1.3]})  # fmt: skip
    assert [row[-1] for row in report.rows([loaded, unrecorded, rounds])] == ["2.3", "–", "1.0"]
    assert "100 µs" in report.table([loaded]).splitlines()[1]


def test_a_benchmark_measured_again_alone_takes_its_place_marked(tmp_path):
    """A later run of one benchmark alone (after a change that bears on it) replaces the
    full run's figure, in its place in the table, marked with when; `--rerun` writes the
    merged results and the README section from them, and wants the run it amends."""
    import json
    import subprocess
    import sys

    full = _run(1_000_000, 1e-4, 10_000, 5)
    info = full[0] | {
        "date": "2026-11-23T00:00:00+00:00", "quick": False, "cpu": "cpu", "cores": 2,
        "ram_gb": 4, "load_at_start": [0.1], "load_at_end": [0.2], "python": "3.11",
        "sqlite": "3.40",
    }  # fmt: skip
    later = Result("linked export to CSV", "sqlite", "throughput", 20_000, None, 1.0, None, None)
    alone = {"size": 1_000_000, "date": "2026-11-30T09:00:00+00:00"}
    results = report.rerun(full[1], [(alone, [later])])
    assert [r.benchmark for r in results] == [r.benchmark for r in full[1]]  # in its place
    row = report.rows(results)[1]
    assert row[:3] == ("linked export to CSV †", "sqlite", "20,000/s")
    assert report.rows(results)[0][0] == "scan lookup (one session)"  # the others as they were
    section = report.readme_section(info, results)
    assert "| linked export to CSV † | sqlite | 20,000/s |" in section
    assert "† Measured again on 2026-11-30" in section
    assert "Measured again" not in report.readme_section(info, full[1])

    earlier, again, merged = (tmp_path / name for name in ("full.json", "alone.json", "m.json"))
    report.write_json(earlier, info, full[1])
    report.write_json(again, alone, [later])
    main = [sys.executable, "-m", "benchmarks"]
    done = subprocess.run([*main, "--from-json", earlier, "--rerun", again, "--json", merged],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "linked export to CSV †" in done.stdout
    written = json.loads(merged.read_text())["results"]
    assert written[1]["median"] == 20_000 and written[1]["details"]["rerun"] == "2026-11-30"
    refused = subprocess.run([*main, "--rerun", again], capture_output=True, text=True)
    assert refused.returncode == 2 and "give --from-json" in refused.stderr


def test_only_some_benchmarks_run_when_asked(tmp_path):
    """`--only` measures again what a change bears on, and builds no inventory for what
    needs none: the labels need no database, the REDCap import makes fresh ones of its own."""
    import json
    import subprocess
    import sys

    for only, prefix in (("labels", "labels: "), ("redcap", "REDCap import ")):
        out = tmp_path / f"{only}.json"
        command = [sys.executable, "-m", "benchmarks", "--quick", "--only", only]
        command += ["--engines", "sqlite", "--dir", tmp_path, "--json", out]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        assert "building the inventory" not in done.stderr
        benchmarks = {r["benchmark"] for r in json.loads(out.read_text())["results"]}
        assert benchmarks and all(name.startswith(prefix) for name in benchmarks), benchmarks


def test_a_figure_measured_again_is_left_out_of_the_growth_table():
    """The smaller run came before the change a figure was measured again for: the two do not
    make a rate of growth."""
    smaller, larger = _run(100_000, 1e-4, 10, 5), _run(1_000_000, 2e-4, 5, 5)
    later = Result("scan lookup (one session)", "sqlite", "latency", 5e-5, None, None, None, None)
    merged = report.rerun(larger[1], [({"date": "2026-11-30"}, [later])])
    benchmarks = [row[0] for row in report.growth_rows(smaller, (larger[0], merged))]
    assert "scan lookup (one session)" not in benchmarks and "linked export to CSV" in benchmarks


def test_a_note_that_explains_several_misses_is_given_once_naming_them(monkeypatch):
    info = {
        "date": "2026-11-23T00:00:00+00:00", "size": 1_000_000, "quick": False, "cpu": "cpu",
        "cores": 2, "ram_gb": 4, "load_at_start": [0.1], "load_at_end": [0.2],
        "python": "3.11", "sqlite": "3.40",
    }  # fmt: skip

    def missed(name: str, engine: str = "postgres") -> Result:
        return Result(name, engine, "latency", 0.2, 0.3, 0.01, "p99 ≤ 50 ms", False)

    monkeypatch.setattr(
        report,
        "MISS_NOTES",
        dict.fromkeys([("view A", "postgres"), ("view B", "postgres")], "the paint waits."),
    )
    section = report.readme_section(info, [missed("view A"), missed("view B"), missed("view C")])
    notes = [line for line in section.splitlines() if line.startswith("- view")]
    assert notes == [
        "- view A, postgres; view B, postgres: the paint waits.",
        "- view C, postgres: not profiled yet.",
    ]


def test_every_format_an_export_writes_is_benchmarked():
    """A format added to the export is added to its benchmark, or this fails."""
    from benchmarks.export_bench import OTHER_FORMATS
    from biobank.export.formats import DEFAULT_FORMAT, FORMATS

    assert {DEFAULT_FORMAT, *OTHER_FORMATS} == set(FORMATS)
    assert DEFAULT_FORMAT == "csv"  # the one the others are measured against
