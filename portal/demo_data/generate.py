"""Writes the demo's sample files (run once; the CSVs are committed):

    python portal/demo_data/generate.py

people.csv: 300 made-up people (email, name, plan, country, signed_up_at, last_seen_at).
plan-changes.csv: 40 of them changing plan later on; plan-changes-broken.csv: the same
with one unreadable date, the file the demo's failed import is first given.
Every address is under example.com (reserved for examples, RFC 2606).
"""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRST = ["Ada", "Ben", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas",
         "Kemi", "Lars", "Maya", "Nils", "Olga", "Priya", "Quinn", "Rosa", "Sami", "Tariq",
         "Uma", "Viktor", "Wen", "Xenia", "Yusuf", "Zoe"]
LAST = ["Abara", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad",
        "Ito", "Jensen", "Kowalski", "Lind", "Moreau", "Nakamura", "Okafor", "Petrov",
        "Quispe", "Rossi", "Silva", "Tanaka", "Urban", "Varga", "Weber", "Yilmaz"]
COUNTRIES = ["NO", "SE", "DE", "FR", "GB", "US", "JP", "BR", "NG", "IN"]
PLANS = ["free"] * 6 + ["pro"] * 3 + ["team"]
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2026, 11, 15, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def people(rng: random.Random, count: int = 300) -> list[dict[str, str]]:
    rows, seen = [], set()
    while len(rows) < count:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}".lower()
        if email in seen:
            email += str(len(rows))
        seen.add(email)
        signed_up = START + timedelta(seconds=rng.randrange(int((END - START).total_seconds()
                                                                * 0.8)))
        last_seen = signed_up + timedelta(seconds=rng.randrange(
            int((END - signed_up).total_seconds())))
        rows.append({"email": f"{email}@example.com", "name": f"{first} {last}",
                     "plan": rng.choice(PLANS), "country": rng.choice(COUNTRIES),
                     "signed_up_at": iso(signed_up), "last_seen_at": iso(last_seen)})
    return rows


def write(name: str, fields: list[str], rows: list[dict[str, str]]) -> None:
    with open(HERE / name, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    rng = random.Random(13)
    everyone = people(rng)
    write("people.csv", list(everyone[0]), everyone)
    changes = []
    for person in rng.sample(everyone, 40):
        plan = rng.choice([plan for plan in ("free", "pro", "team") if plan != person["plan"]])
        changes.append({"email": person["email"], "plan": plan,
                        "changed_at": iso(END + timedelta(minutes=rng.randrange(10_000)))})
    changes.sort(key=lambda row: row["changed_at"])
    write("plan-changes.csv", ["email", "plan", "changed_at"], changes)
    broken = [dict(row) for row in changes]
    broken[17]["changed_at"] = "last Tuesday"
    write("plan-changes-broken.csv", ["email", "plan", "changed_at"], broken)


if __name__ == "__main__":
    main()
