"""`make bench` as a smoke run: every bench script at its smallest size, once.

A quick-mode run of the whole `make bench` (BENCH_QUICK=1) takes over a minute on this
2-core machine, too long for the suite, so this runs the same runner (bench/run.py, what
`make bench` calls) with every size at its floor, and checks what `make bench` promises:
each script's results are `name=value` lines that parse, every ratio of the earlier
issues is printed and described in the table of docs/BENCHMARKS.md, and a script that
fails or prints junk fails the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import run as bench_run
from scripts import bench_table

ROOT = Path(__file__).resolve().parent.parent
SMALLEST = {"BENCH_QUICK": "1", "BENCH_UNITS": "20", "BENCH_ROUNDS": "1",
            "BENCH_LIST_JOBS": "500", "BENCH_LOG_EVENTS": "2000", "BENCH_REPEATS": "1",
            "BENCH_BULK_ROWS": "2000", "BENCH_IDLE_SAMPLES": "10",
            "BENCH_PROFILE_ROWS": "500", "BENCH_LOAD_CLIENTS": "5", "BENCH_LOAD_SECONDS": "3",
            "BENCH_RATIO_SECONDS": "3", "BENCH_LOAD_ROWS": "2000", "BENCH_SCALING_UNITS": "20",
            "BENCH_SCALING_ROWS": "2000", "BENCH_SCALING_DUE": "100"}
# Figures other scripts of issue 15 bring (load, scaling, mutation testing): in the table,
# not printed by the scripts here yet.
LATER = {"mutation_score_lifecycle",
         "mutation_score_schedule", "mutation_score_runner", "mutation_score_vault"}


def run_bench(*scripts: str, **extra: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("BENCH_")}  # SQLite, whatever the shell says
    env.update(SMALLEST, **extra)
    return subprocess.run([sys.executable, "bench/run.py", *scripts], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_every_script_prints_its_ratios():
    done = run_bench()
    assert done.returncode == 0, done.stderr[-3000:]
    results = bench_run.parse(done.stdout.splitlines())  # every stdout line is name=value
    expected = set(bench_table.RATIOS) - LATER
    assert set(results) == expected, (set(results) ^ expected)
    for name, value in results.items():
        assert value > 0, (name, value)
    # Comments go to stderr, each a "# " line; the runner times every script.
    comments = done.stderr.splitlines()
    assert [line for line in comments if not line.startswith("# ")] == []
    for script in ROOT.glob("bench/bench_*.py"):
        assert any(line.startswith(f"# {script.name}: ") for line in comments), script.name


def test_a_failing_or_junk_script_fails_the_run(tmp_path):
    good = tmp_path / "bench_good.py"
    good.write_text("import sys\nprint('good_ratio=1.5')\nprint('# fine', file=sys.stderr)\n")
    failing = tmp_path / "bench_failing.py"
    failing.write_text("print('half_ratio=0.5')\nraise SystemExit(3)\n")
    junk = tmp_path / "bench_junk.py"
    junk.write_text("print('a ratio of 0.5')\n")
    silent = tmp_path / "bench_silent.py"
    silent.write_text("")

    done = run_bench(str(good))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "good_ratio=1.5\n"
    for script, problem in ((failing, "exited with status 3"), (junk, "not a name=value"),
                            (silent, "printed no result")):
        done = run_bench(str(good), str(script))
        assert done.returncode == 1, (script.name, done.stderr)
        assert f"# FAILED: {script.name}" in done.stderr and problem in done.stderr
        assert done.stdout.startswith("good_ratio=1.5\n"), "the other scripts still ran"


def test_make_bench_runs_the_runner():
    """`make bench` is the runner: its recipe calls bench/run.py, which fails the run."""
    done = subprocess.run(["make", "-n", "-o", ".venv/.installed-stamp", "bench"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert "bench/run.py" in done.stdout


def test_table_rows_from_bench_output(tmp_path):
    sqlite = tmp_path / "sqlite.txt"
    sqlite.write_text("# a comment\nengine_throughput_ratio=0.61\nbulk_import_ratio=0.7\n"
                      "WARNI [x] noise\nrc=1\n")  # a shell's exit status saved with it
    postgresql = tmp_path / "postgresql.txt"
    # With BENCH_DATABASE_URL, bench_bulk still measures SQLite (unsuffixed) and
    # PostgreSQL (suffixed), the memory ratio on SQLite only.
    postgresql.write_text("engine_throughput_ratio=0.52\nbulk_import_ratio_postgresql=0.72\n"
                          "bulk_import_ratio=0.69\nbulk_memory_ratio=1.1\n")
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"intro\n{bench_table.BEGIN}\nold\n{bench_table.END}\nafter\n")
    assert bench_table.main(["--sqlite", str(sqlite), "--postgresql", str(postgresql),
                             "--date", "2026-01-02", "--machine", "box", "--note", "n",
                             "--write", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(f"intro\n{bench_table.BEGIN}\n|") and text.endswith(
        f"{bench_table.END}\nafter\n")
    rows = bench_table.existing(text)
    assert set(rows) == set(bench_table.RATIOS)  # no row for rc=1
    assert (rows["engine_throughput_ratio"]["SQLite"],
            rows["engine_throughput_ratio"]["PostgreSQL"]) == ("0.61", "0.52")
    # bench_bulk's _postgresql name lands in the PostgreSQL column of its base name.
    assert (rows["bulk_import_ratio"]["SQLite"], rows["bulk_import_ratio"]["PostgreSQL"]) == (
        "0.7", "0.72")
    assert (rows["bulk_memory_ratio"]["SQLite"], rows["bulk_memory_ratio"]["PostgreSQL"]) == (
        "—", "—")
    assert rows["bulk_import_ratio"]["Date"] == "2026-01-02"
    assert rows["poll_vs_bare_ratio"]["SQLite"] == "—"

    # A later run of one database keeps the other's figures already in the file.
    sqlite.write_text("engine_throughput_ratio=0.66\n")
    bench_table.main(["--sqlite", str(sqlite), "--date", "2026-02-03", "--write", str(doc)])
    rows = bench_table.existing(doc.read_text())
    assert (rows["engine_throughput_ratio"]["SQLite"],
            rows["engine_throughput_ratio"]["PostgreSQL"]) == ("0.66", "0.52")
    assert rows["bulk_import_ratio"]["Date"] == "2026-01-02"
