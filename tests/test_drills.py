"""The fault drills (scripts/drills.py) at their smallest, so they keep working: 2 SIGKILLs
of the worker during a 4,000-row import (nothing lost, nothing twice, no traceback), and
the full-disk drill (a 507 and nothing half-written) where a tmpfs can be mounted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_drills(*names: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DRILL_ROWS": "4000",
           "DRILL_BULK_ROWS": "2000", "DRILL_KILLS": "2", "DRILL_BULK_KILLS": "0",
           "DRILL_TIMEOUT": "90",
           "PORTAL_IMPORT_BATCH_SIZE": "250", "PORTAL_BULK_BATCH_SIZE": "250"}
    for name in ("DATABASE_URL", "REDIS_URL"):  # the drills start their own
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "drills.py"), *names],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    return lines


def test_kill_and_disk_drills_lose_nothing_and_write_nothing_twice():
    results = run_drills("kill", "disk")
    kill, disk, summary = results
    assert kill["drill"] == "kill" and kill["ok"], kill
    assert kill["kills"] == 2 and kill["recover_s_max"] > 0
    assert kill["messages"] == kill["messages_expected"] == 6000
    assert kill["lost"] == kill["duplicated"] == kill["tracebacks"] == 0
    assert kill["jobs_recovered"] == kill["jobs_affected"] == 2
    assert disk["ok"], disk
    if "skipped" not in disk:
        assert disk["refused_status"] == 507 and disk["left_behind"] == []
        assert disk["import_rows_kept"] == 0 and disk["accepted_status"] == 202
    assert summary["summary"]["failed"] == [] and summary["summary"]["lost"] == 0


def test_an_unknown_drill_is_refused():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "drills.py"), "nope"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown drill(s) nope" in done.stderr
