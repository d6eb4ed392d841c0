"""profile_import_ratio: the import write path (write_messages, batches of 2,000 rows, a
commit per batch, as an import job's units write) with profiles kept, against the same
path with no identity key configured, so that no profile is touched. Rows per second of
the first over the second (higher is better; 1.0 would mean profiles cost nothing).

50,000 rows about 20,000 people (each row has an email and a user_id; a third of the rows
add to a person already seen, with event times out of order). Uses a SQLite file in a
temporary folder, or BENCH_DATABASE_URL (its tables are dropped and rebuilt) when set.
BENCH_PROFILE_ROWS sets the rows (5,000 with BENCH_QUICK=1; people are two fifths of them).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_app, size  # noqa: E402
from portal.datastore import write_messages  # noqa: E402
from portal.extensions import db  # noqa: E402
from providers.base import OutMessage  # noqa: E402

ROWS = size("BENCH_PROFILE_ROWS", 50_000, 5_000)
PEOPLE = ROWS * 2 // 5
BATCH = 2000
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def rows(seed: int) -> list[OutMessage]:
    rng = random.Random(seed)
    found = []
    for n in range(ROWS):
        person = rng.randrange(PEOPLE)
        found.append(OutMessage(f"r{n}", T0 + timedelta(seconds=rng.randrange(10**7)), {
            "email": f"Person{person}@example.com", "user_id": person, "n": n,
            "plan": rng.choice(["free", "pro", "team"]), "city": rng.choice(["Oslo", "Rome"])}))
    return found


def timed_import(identity_keys: str) -> float:
    """Rows per second of writing every row, a batch and a commit at a time."""
    with tempfile.TemporaryDirectory() as folder:
        app = bench_app(folder, PORTAL_IDENTITY_KEYS=identity_keys)
        messages = rows(seed=1)
        with app.app_context():
            started = time.perf_counter()
            for start in range(0, len(messages), BATCH):
                write_messages("bench", messages[start:start + BATCH], source="import:1")
                db.session.commit()
            elapsed = time.perf_counter() - started
            db.session.remove()
            db.engine.dispose()
    return ROWS / elapsed


def main() -> None:
    without = timed_import("no_such_key")
    with_profiles = timed_import("email,user_id")
    print(f"# {ROWS:,} rows: {without:,.0f} rows/s without profiles, {with_profiles:,.0f} "
          "with", file=sys.stderr)
    print(f"profile_import_ratio={with_profiles / without:.2f}")


if __name__ == "__main__":
    main()
