"""Turn `make bench` output into the rows of the table in docs/BENCHMARKS.md.

    make bench > sqlite.txt 2>&1
    BENCH_DATABASE_URL=postgresql+psycopg://... make bench > postgresql.txt 2>&1
    python scripts/bench_table.py --sqlite sqlite.txt --postgresql postgresql.txt \
        --note "quiet machine" --write docs/BENCHMARKS.md

Reads the `name=value` lines (comments and anything else are skipped); a name ending in
`_postgresql` (bench_bulk prints its PostgreSQL figures that way) goes in the PostgreSQL
column of its base name. Prints the table (every known ratio, in order; a ratio not in
either output keeps "—", or with --write the figure already in the file), or with
--write replaces the table between the markers in that file. The date defaults to today
(UTC) and the machine to this one (CPU model, cores, memory).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

# name: (what it measures, target). Every ratio `make bench` prints has a row here (a
# test checks it), plus the issue-15 figures still to come from other scripts.
RATIOS: dict[str, tuple[str, str]] = {
    "engine_throughput_ratio": (
        "1,000 no-op units through dispatcher, RQ, runner and events against 1,000 no-op "
        "functions on bare RQ, both enqueued by one pipelined enqueue_many (throughput)",
        ">= 0.5"),
    "list_scaling_ratio": ("job list, first page, default view: 100,000 jobs against 1,000 "
                           "(time)", "<= 1.5"),
    **{f"list_sort_{key}_scaling_ratio": (
        f"job list, first page sorted by {label}, the slower direction: 100,000 jobs "
        "against 1,000 (time)", "<= 1.5")
       for key, label in (("created", "created"), ("name", "name"),
                          ("authorization", "authorization"), ("provider", "provider"),
                          ("type", "type"), ("status", "status"), ("last_run", "last run"),
                          ("next_run", "next run"))},
    "logs_scaling_ratio": ("summary's logs box, unfiltered: 1,000,000 events against 1,000 "
                           "(time)", "<= 1.5"),
    "logs_kind_scaling_ratio": ("logs box filtered by kind (errors, 1 event in 4): 1,000,000 "
                                "events against 1,000 (time)", "<= 1.5"),
    "logs_search_scaling_ratio": ("logs box filtered by text in 100 events of each log "
                                  "(1 in 10 of the small, 1 in 10,000 of the large: a full "
                                  "page each): 1,000,000 events against 1,000 (time)",
                                  "<= 1.5"),
    "logs_search_old_scaling_ratio": ("logs box filtered by text only in the oldest 100 "
                                      "events of each log: 1,000,000 events against 1,000 "
                                      "(time)", "<= 1.5"),
    "logs_search_nomatch_scaling_ratio": ("logs box filtered by text in no event: "
                                          "1,000,000 events against 1,000 (time)", "<= 1.5"),
    "logs_search_dense_scaling_ratio": ("logs box filtered by text in 1 event in 50 of each "
                                        "log: 1,000,000 events against 1,000; the small "
                                        "page shows 20 rows, the large 100 (time)",
                                        "none set (the pages differ)"),
    "summary_scaling_ratio": ("whole job summary page, events inside its default 24-hour "
                              "metrics frame: 1,000,000 events against 1,000 (time)",
                              "none set (<= 1.5 like the logs)"),
    "bulk_import_ratio": ("bulk CSV import (receive + backfill task) against a bare Core "
                          "insert of the same 1,000,000 rows (rows/s)", ">= 0.5"),
    "bulk_memory_ratio": ("peak RSS importing 1,000,000 rows against 100,000 (SQLite only)",
                          "<= 1.2"),
    "realtime_isolation_ratio": ("p95 collect-to-stream latency during a 1,000,000-row "
                                 "backfill against idle", "<= 2"),
    "profile_import_ratio": ("import write path with profiles kept against none kept, "
                             "50,000 rows about 20,000 people (rows/s)",
                             "none set (higher is better)"),
    "poll_vs_bare_ratio": ("status fragment requests/s against a bare Flask endpoint, "
                           "gunicorn 4 workers, 50 clients (bench_load, issue 15 item 5)",
                           ">= 0.5"),
    "worker_scaling_ratio": ("no-op job path, units/s of 2 worker processes against 1 "
                             "(bench_scaling)", "none set (2.0 would be perfect)"),
    "write_scaling_ratio": ("file imports, rows/s of 2 worker processes against 1 "
                            "(bench_scaling)", "none set (2.0 would be perfect)"),
    **{f"mutation_score_{module}": (f"mutmut: share of mutants of {module}.py killed "
                                    "(issue 15 item 9)", "none set")
       for module in ("lifecycle", "schedule", "runner", "vault")},
}
COLUMNS = ("Name", "What it measures", "Target", "SQLite", "PostgreSQL", "Date", "Machine",
           "Note")
BEGIN, END = "<!-- bench-table -->", "<!-- /bench-table -->"
LINE = re.compile(r"^([a-z][a-z0-9_]*)=(\S+)$")


def results(text: str) -> dict[str, str]:
    """The name=value lines of `make bench` output whose name is a ratio (ends in `_ratio`,
    or `_ratio_postgresql`) or a row of RATIOS; other such lines (a shell's `rc=1` saved with
    the output, say) are not results."""
    return {match[1]: match[2] for line in text.splitlines()
            if (match := LINE.match(line.strip()))
            and (match[1].removesuffix("_postgresql").endswith("_ratio")
                 or match[1].removesuffix("_postgresql") in RATIOS)}


# bench_bulk measures these on SQLite whatever BENCH_DATABASE_URL says (the PostgreSQL
# figures of the first and last come as `<name>_postgresql`).
SQLITE_ALWAYS = {"bulk_import_ratio", "bulk_memory_ratio", "realtime_isolation_ratio"}


def split(found: dict[str, str], default_column: str) -> dict[str, dict[str, str]]:
    """{name: {column: value}}: `_postgresql` names go to the PostgreSQL column; in a
    PostgreSQL run, the SQLite-only names are left out (they are SQLite figures)."""
    columns: dict[str, dict[str, str]] = {}
    for name, value in found.items():
        column = default_column
        if name.endswith("_postgresql"):
            name, column = name.removesuffix("_postgresql"), "PostgreSQL"
        elif default_column == "PostgreSQL" and name in SQLITE_ALWAYS:
            continue
        columns.setdefault(name, {})[column] = value
    return columns


def machine() -> str:
    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return f"{model}, {os.cpu_count()} cores{memory}"


def existing(text: str) -> dict[str, dict[str, str]]:
    """The rows of the table already in a file, by name."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = dict(zip(COLUMNS, cells, strict=True))
    return rows


def table(measured: dict[str, dict[str, str]], old: dict[str, dict[str, str]],
          date: str, where: str, note: str) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name in [*RATIOS, *sorted(set(measured) - set(RATIOS))]:
        what, target = RATIOS.get(name, ("(not described in scripts/bench_table.py)", "?"))
        row = {"Name": f"`{name}`", "What it measures": what, "Target": target,
               "SQLite": "—", "PostgreSQL": "—", "Date": "—", "Machine": "—", "Note": "—"}
        row.update({key: value for key, value in old.get(name, {}).items()
                    if key in ("SQLite", "PostgreSQL", "Date", "Machine", "Note")})
        if name in measured:
            row.update(measured[name])
            row.update({"Date": date, "Machine": where, "Note": note})
        lines.append("| " + " | ".join(row[column] for column in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", type=Path, help="`make bench` output on SQLite")
    parser.add_argument("--postgresql", type=Path,
                        help="`make bench` output with BENCH_DATABASE_URL on PostgreSQL")
    parser.add_argument("--date", default=datetime.now(UTC).date().isoformat())
    parser.add_argument("--machine", default=machine())
    parser.add_argument("--note", default="")
    parser.add_argument("--write", type=Path, help="replace the table in this file")
    args = parser.parse_args(argv)
    measured: dict[str, dict[str, str]] = {}
    for path, column in ((args.sqlite, "SQLite"), (args.postgresql, "PostgreSQL")):
        if path:
            for name, values in split(results(path.read_text()), column).items():
                measured.setdefault(name, {}).update(values)
    note = (args.note or "—").replace("|", "/")
    if not args.write:
        print(table(measured, {}, args.date, args.machine, note))
        return 0
    text = args.write.read_text()
    if BEGIN not in text or END not in text:
        print(f"{args.write} has no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    old_table, tail = rest.split(END, 1)
    new = table(measured, existing(old_table), args.date, args.machine, note)
    args.write.write_text(f"{head}{BEGIN}\n{new}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
