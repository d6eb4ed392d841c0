"""`make bench`: run every bench/bench_*.py in turn and pass on what it prints.

Each script prints its results on stdout, one `name=value` line each (the value a number),
and its comments on stderr, each starting with "# ". This runner checks that: a script
that exits with an error, prints a stdout line of another shape or prints no result at all
makes the whole run fail (exit status 1) after the other scripts have run. BENCH_QUICK=1
(see bench/common.py) shrinks every size for a smoke run. Optional arguments name the
scripts to run (default: all of them).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULT = re.compile(r"^([a-z][a-z0-9_]*)=(-?[0-9]+(?:\.[0-9]+)?|nan|inf)$")


def parse(lines: list[str]) -> dict[str, float]:
    """The results of `name=value` lines; ValueError names the first line of another shape."""
    found = {}
    for line in lines:
        match = RESULT.match(line.strip())
        if not match:
            raise ValueError(f"not a name=value result: {line!r}")
        found[match[1]] = float(match[2])
    return found


def run(script: Path) -> tuple[dict[str, float], str]:
    """Run one script, passing its stdout and stderr on as they come; its results and
    what went wrong ("" when nothing did)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(script)], cwd=BENCH.parent,
                               stdout=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    process.wait()
    print(f"# {script.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr,
          flush=True)
    if process.returncode:
        return {}, f"{script.name} exited with status {process.returncode}"
    try:
        found = parse(lines)
    except ValueError as error:
        return {}, f"{script.name}: {error}"
    return found, "" if found else f"{script.name} printed no result"


def main(names: list[str]) -> int:
    scripts = ([BENCH / name for name in names] if names
               else sorted(BENCH.glob("bench_*.py")))
    failures = []
    for script in scripts:
        _, problem = run(script)
        if problem:
            print(f"# FAILED: {problem}", file=sys.stderr, flush=True)
            failures.append(problem)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
