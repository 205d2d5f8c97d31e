"""The benchmark suite runs end to end at a tiny size on both engines, so it cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import postgres_base_url

from benchmarks.export_bench import OTHER_FORMATS

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = {"sqlite": 4, "postgres": 8}


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["sqlite", "postgres"])
def test_every_benchmark_runs_and_reports(engine_name, tmp_path):
    env = dict(os.environ)
    if engine_name == "postgres":
        env["BIOBANK_BENCH_POSTGRES_URL"] = postgres_base_url()
    results_file = tmp_path / "results.json"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--size", "2000"]
    command += ["--engines", engine_name, "--json", str(results_file), "--dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr

    document = json.loads(results_file.read_text())
    labels = [r for r in document["results"] if r["engine"] == "none"]
    assert len(labels) >= 2 and all(r["passed"] is not None for r in labels)
    results = {r["benchmark"]: r for r in document["results"] if r["engine"] != "none"}
    tui = {
        "TUI: scan → specimen detail",
        "TUI: next tube → its detail",
        "TUI: scan → box grid",
        "TUI: pull list scan → line ticked",
        "TUI: cold start to a scan-ready home",
    }
    if engine_name == "sqlite":
        tui.add("TUI: cold start to sign-in")
        tui.add("CLI: scan ID (CPU)")  # a new process on its own embedded database
    assert set(results) == tui | {
        "scan lookup (per scan)",
        "scan lookup (one session)",
        "allocation in freezer (find_slots)",
        "accession into freezer (full)",
        f"{PROCESSES[engine_name]} processes placing",
        f"{PROCESSES[engine_name]} processes placing (client CPU)",
        "legacy import (check + write)",
        "legacy import (write only)",
        "legacy import peak memory",
        "linked export to CSV",
        "linked export peak memory",
        *(f"linked export to {label}" for label in OTHER_FORMATS.values()),
        *(f"linked export to {label} peak memory" for label in OTHER_FORMATS.values()),
        "REDCap import (check + write)",
        "REDCap import (write only)",
        "REDCap import peak memory",
        "accession during a legacy import",
        "accession during a REDCap import",
        "audit verify (whole chain)",
        "audit verify after a day's work (incremental)",
        "cohort preview with phenotype conditions",
        "request: pick list",
        "request: pick scan",
        "backup (whole database)",
        "restore (whole database)",
    }
    for result in results.values():
        assert result["engine"] == engine_name
        assert result["median"] > 0, result
        # a raw cursor streaming a small join may hold nothing more than before it
        assert result["kind"] == "memory" or result["baseline"] > 0, result
        assert (result["passed"] is None) == (result["goal"] is None), result
        load = result["details"]["load_average"]  # the load it was taken under, or each round's
        assert all(n >= 0 for n in (load if isinstance(load, list) else [load])), result
    placing = results[f"{PROCESSES[engine_name]} processes placing"]["details"]
    assert placing["integrity_problems"] == []
    assert placing["placements"] >= PROCESSES[engine_name]
    # the server's CPU is counted where it can be read: a PostgreSQL on this machine, as in CI
    server_cpu = placing["server_cpu_ms_per_placement"]
    if engine_name == "sqlite":
        assert server_cpu is None
    elif os.environ.get("CI"):
        assert server_cpu is not None and server_cpu >= 0
    assert results["TUI: pull list scan → line ticked"]["details"]["lines"] >= 500
    export = results["linked export to CSV"]["details"]
    assert 0.2 < export["share_of_specimens"] < 0.4, export
    assert export["counts"]["excluded_by_consent"] > 0, export
    redcap = results["REDCap import (check + write)"]["details"]
    assert redcap["records_events"] == 2000 and len(redcap["rounds"]) == 3, redcap
    assert redcap["baseline_method"] == ("COPY" if engine_name == "postgres" else "executemany")
    for kind in ("legacy", "REDCap"):
        stall = results[f"accession during a {kind} import"]["details"]
        assert stall["accessions_during"] > 0 and stall["p99_alone"] > 0, stall
    incremental = results["audit verify after a day's work (incremental)"]["details"]
    assert 0 < incremental["checked"] < incremental["entries"], incremental
    assert document["machine"]["size"] == 2000
    assert "scan lookup (per scan)" in done.stdout
    assert not list(tmp_path.glob("*.sqlite*")), "a SQLite database or its copy was left"
    if engine_name == "postgres":
        import psycopg

        with psycopg.connect(postgres_base_url()) as connection:
            left = [n for (n,) in connection.execute("SELECT datname FROM pg_database")]
        ours = {"biobank_bench_2000", "biobank_bench_2000_copy", "biobank_bench_2000_redcap"}
        assert not (ours | {"biobank_bench_2000_redcap_copy"}) & set(left), left
