"""A capacity model of the portal at 1x, 10x and 100x a baseline load (docs/SCALING.md).

Not a measurement: it multiplies the per-unit costs that bench/bench_scaling.py measured
on one machine (Redis commands, database statements, worker CPU time per unit, rows per
second of one writer) by a load, and compares the result with the capacity of each shared
resource: how many worker processes the load needs, and how busy PostgreSQL, Redis and the
single active dispatcher would be. The first resource past 100 % is the bottleneck.

Every input is a flag; the defaults are the figures measured on 2026-11-30 (second run) (see
docs/SCALING.md) and a baseline load that is an assumption, not telemetry:

    .venv/bin/python scripts/simulate_scale.py
    .venv/bin/python scripts/simulate_scale.py --units-per-hour 20000 --rows-per-day 5e7

It also runs a small discrete-time simulation of the dispatcher at each load: jobs fall
due at random (Poisson) within each pass interval; a pass wakes and enqueues what is due
at the measured rate; the lag is how long a due job waits for its pass to reach it.
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Costs:
    """Per-unit costs and capacities; see the flags for their meaning."""

    noop_unit_seconds: float
    write_unit_seconds: float
    rows_per_write_unit: int
    redis_per_unit: float
    statements_per_noop_unit: float
    statements_per_write_unit: float
    dispatch_jobs_per_second: float
    dispatch_interval: float
    write_units_per_dispatch: float
    status_changes_per_second: float
    redis_ops_per_second: float
    pg_statements_per_second: float
    pg_rows_per_second: float
    worker_processes_per_host: int


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    load = parser.add_argument_group("baseline load (an assumption: no production telemetry)")
    load.add_argument("--units-per-hour", type=float, default=6000,
                      help="job units that are not bulk writes (syncs, exports, checks) per "
                      "hour at 1x (default 6,000: 500 jobs each running every 5 minutes)")
    load.add_argument("--rows-per-day", type=float, default=5e6,
                      help="rows imported per day through jobs at 1x (default 5,000,000)")
    load.add_argument("--peak", type=float, default=4,
                      help="peak hour against the day's average (default 4)")
    load.add_argument("--scales", default="1,10,100", help="multiples of the baseline")
    cost = parser.add_argument_group("measured per-unit costs (bench/bench_scaling.py)")
    cost.add_argument("--noop-unit-seconds", type=float, default=1 / 92,
                      help="a worker's wall time per unit with no data (1 worker on "
                      "PostgreSQL: 92 units/s, of which 7-8 ms is the worker's CPU)")
    cost.add_argument("--write-unit-seconds", type=float, default=2000 / 2043,
                      help="a worker's wall time per 2,000-row import unit (1 worker on "
                      "PostgreSQL: 2,043 rows/s, of which ~270 ms is the worker's CPU)")
    cost.add_argument("--rows-per-write-unit", type=int, default=2000)
    cost.add_argument("--redis-per-unit", type=float, default=13,
                      help="Redis commands per unit, RQ's own bookkeeping included (6.5 "
                      "for a one-unit job taken in a batch, 5.5-12.8 for an import unit; "
                      "60 when every job was its own RQ job)")
    cost.add_argument("--statements-per-noop-unit", type=float, default=4.3,
                      help="PostgreSQL (SQLite: 6.1)")
    cost.add_argument("--statements-per-write-unit", type=float, default=19,
                      help="PostgreSQL (SQLite: 25)")
    cost.add_argument("--dispatch-jobs-per-second", type=float, default=876,
                      help="due jobs one dispatcher pass wakes and enqueues per second "
                      "(PostgreSQL, 10,000 due: 364-876 in three runs; SQLite 835-1,684)")
    cost.add_argument("--write-units-per-dispatch", type=float, default=5,
                      help="import units one RQ job runs in its time slice (5 measured)")
    cost.add_argument("--dispatch-interval", type=float, default=1,
                      help="PORTAL_DISPATCH_INTERVAL, seconds between passes")
    cap = parser.add_argument_group("capacities of the shared parts (assumptions; see the doc)")
    cap.add_argument("--redis-ops-per-second", type=float, default=80_000,
                     help="one Redis core, small commands, pipelined in part (80,000)")
    cap.add_argument("--pg-statements-per-second", type=float, default=20_000,
                     help="short OLTP statements one PostgreSQL primary of 8 cores sustains "
                     "(20,000)")
    cap.add_argument("--pg-rows-per-second", type=float, default=60_000,
                     help="message rows with their profiles one PostgreSQL primary takes "
                     "(60,000)")
    cap.add_argument("--status-changes-per-second", type=float, default=1000,
                     help="status changes the shared job_status_counts rows take one "
                     "after another (a row lock held to commit, ~1 ms across a network)")
    cap.add_argument("--worker-processes-per-host", type=int, default=8)
    cap.add_argument("--seed", type=int, default=15)
    return parser.parse_args()


def dispatcher_lag(due_per_second: float, costs: Costs, seconds: int, rng: random.Random
                   ) -> tuple[float, float, float]:
    """Simulate `seconds` of passes; (median lag, p99 lag, share of time the dispatcher is
    busy). A pass that takes longer than the interval delays the next one."""
    clock, backlog, lags, busy = 0.0, [], [], 0.0
    arrivals = []
    moment = 0.0
    while moment < seconds:
        moment += rng.expovariate(due_per_second) if due_per_second else seconds
        arrivals.append(moment)
    position = 0
    while clock < seconds:
        while position < len(arrivals) and arrivals[position] <= clock:
            backlog.append(arrivals[position])
            position += 1
        took = len(backlog) / costs.dispatch_jobs_per_second
        for index, due in enumerate(backlog):
            lags.append(clock + (index + 1) / costs.dispatch_jobs_per_second - due)
        backlog = []
        busy += took
        clock += max(costs.dispatch_interval, took)
    if not lags:
        return 0.0, 0.0, 0.0
    lags.sort()
    return statistics.median(lags), lags[int(len(lags) * 0.99)], busy / clock


def main() -> None:
    args = arguments()
    costs = Costs(args.noop_unit_seconds, args.write_unit_seconds, args.rows_per_write_unit,
                  args.redis_per_unit, args.statements_per_noop_unit,
                  args.statements_per_write_unit, args.dispatch_jobs_per_second,
                  args.dispatch_interval, args.write_units_per_dispatch,
                  args.status_changes_per_second, args.redis_ops_per_second,
                  args.pg_statements_per_second, args.pg_rows_per_second,
                  args.worker_processes_per_host)
    rng = random.Random(args.seed)
    print("At the peak hour (baseline x peak factor). Utilisation over 100 % means that part "
          "cannot keep up.\n")
    header = (f"{'load':>5} {'units/s':>9} {'rows/s':>9} {'workers':>8} {'hosts':>6} "
              f"{'Redis':>7} {'PG stmts':>9} {'PG rows':>8} {'counts':>7} {'disp busy':>10} "
              f"{'lag p50':>8} {'lag p99':>8}  first to saturate")
    print(header)
    print("-" * len(header))
    for scale in (float(s) for s in args.scales.split(",")):
        plain = args.units_per_hour / 3600 * scale * args.peak
        rows = args.rows_per_day / 86400 * scale * args.peak
        writes = rows / costs.rows_per_write_unit
        units = plain + writes
        # Worker processes busy all the time at this rate (each process is one core's worth).
        workers = plain * costs.noop_unit_seconds + writes * costs.write_unit_seconds
        hosts = workers / costs.worker_processes_per_host
        redis = units * costs.redis_per_unit / costs.redis_ops_per_second
        statements = (plain * costs.statements_per_noop_unit
                      + writes * costs.statements_per_write_unit)
        pg = statements / costs.pg_statements_per_second
        pg_rows = rows / costs.pg_rows_per_second
        # A one-unit run passes the dispatcher once (woken and enqueued); an import, once
        # per RQ job of several units.
        dispatched = plain + writes / costs.write_units_per_dispatch
        median, p99, busy = dispatcher_lag(dispatched, costs, 600, rng)
        # Two status changes per run (woken, then completed / sleeping).
        hot_row = 2 * dispatched / costs.status_changes_per_second
        shares = {"PostgreSQL statements": pg, "PostgreSQL row writes": pg_rows,
                  "Redis": redis, "the dispatcher": busy, "the status-count rows": hot_row}
        first = max(shares, key=shares.get)
        print(f"{scale:>4.0f}x {units:>9,.1f} {rows:>9,.0f} {workers:>8.1f} {hosts:>6.1f} "
              f"{redis:>7.1%} {pg:>9.1%} {pg_rows:>8.1%} {hot_row:>7.1%} {busy:>10.1%} "
              f"{median:>7.2f}s {p99:>7.2f}s  {first} ({shares[first]:.0%})")
    print("\nworkers: worker processes kept busy (wall time; a worker waits on the database "
          "part of it, so a core can serve more than one); hosts: at "
          f"{costs.worker_processes_per_host} worker processes per host. The dispatcher is "
          "one process at a time (a standby waits), so its busy share cannot be spread.")


if __name__ == "__main__":
    main()
