"""Load: the portal under gunicorn (4 workers) with one RQ worker and the dispatcher, and
BENCH_LOAD_CLIENTS (50) signed-in clients for BENCH_LOAD_SECONDS (60) while a CSV import
runs. Each client signs in for real (the login form and its CSRF token; every client is
its own user) and then, without pause, goes round what a person's browser asks for: the
job list and the list's status cells (the poller's /jobs/statuses?ids=...), the running
import's summary, its status fragment (/jobs/<id>/live) and live log tail
(/jobs/<id>/logs?after=...), each followed as htmx would (the next URL comes from the
fragment just received), and real-time messages to POST /api/v2/collect/json/<stream>
with an access token.

Prints the total requests, the errors (any error fails the script, its first responses
printed), p50/p95/p99 per request kind, and `poll_vs_bare_ratio=`: the status fragment's
requests per second against a bare Flask endpoint (bench/bare_app.py) served by gunicorn
with the same settings, the same clients asking only for one or the other, in alternating
slices of BENCH_RATIO_SECONDS (30) in all for each side, after the load. Higher is
better; the target is >= 0.5.

SQLite in a temporary folder, or BENCH_DATABASE_URL (its schema is rebuilt; the names
then end in `_postgresql`). Loopback only: a private Redis from the bundled binary, the
servers on free ports of 127.0.0.1. The sign-in throttle per client address is lifted for
the run (PORTAL_LOGIN_LIMIT_ADDRESS), as every client comes from 127.0.0.1.

Why a script of our own (threads and httpx, in a few client processes) rather than
locust: it needs no new dependency (locust brings gevent and its own Flask UI), the run
is bounded and scripted end to end, and following htmx's pollers needs parsing of the
fragments either way. Comment lines (#) go to stderr.
"""

from __future__ import annotations

import html
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.common import free_port, log, size, start_redis  # noqa: E402

CLIENTS = size("BENCH_LOAD_CLIENTS", 50, 10)
SECONDS = float(size("BENCH_LOAD_SECONDS", 60, 10))
RATIO_SECONDS = float(size("BENCH_RATIO_SECONDS", 30, 6))
ROWS = size("BENCH_LOAD_ROWS", 400_000, 20_000)
PROCESSES = 5  # client processes, CLIENTS / PROCESSES threads each
SLICES = 3  # each side of the ratio runs in this many slices, alternating
PASSWORD = "load-bench-password-42"
VAULT_KEYS = "bench:" + "A" * 43 + "="
STREAM = "load"
# What one client asks for, in turn: a person on the list (it polls the status cells every
# 2 s) and on the running import's summary (status and log tail every 1 s), and a script
# posting real-time messages.
ROUND = ("list", "statuses", "summary", "live", "log_tail", "live", "log_tail", "statuses",
         "live", "log_tail", "collect")
# 204: the status block has nothing new (portal/pollgate.py); htmx keeps it and polls on.
OK = {"list": {200}, "statuses": {200, 286}, "summary": {200}, "live": {200, 204, 286},
      "log_tail": {200, 286}, "collect": {202}, "ratio_live": {200, 204, 286}, "bare": {200}}
SHOWN_ERRORS = 5
# The headers htmx sends with a poll that the portal reads on the way (HX-Current-URL,
# which it reads only to send a signed-out poller back to its page, is left out).
HTMX = {kind: {"HX-Request": "true", "HX-Trigger": trigger, "HX-Target": target}
        for kind, trigger, target in (("statuses", "status-poller", "status-poller"),
                                      ("live", "job-live", "job-live"),
                                      ("ratio_live", "job-live", "job-live"),
                                      ("log_tail", "log-poller", "log-rows"))}


def percentile(values: list[float], share: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1]


def add_codes(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    """Add `more`'s answers per kind and status code to `into`."""
    for kind, counts in more.items():
        for code, count in counts.items():
            into.setdefault(kind, {})[code] = into.get(kind, {}).get(code, 0) + count


# --- the clients (run in child processes: `bench_load.py --clients SPEC`) -------------

def hx_get(body: str, pattern: str) -> str | None:
    """The first hx-get URL in `body` matching `pattern` (unescaped), or None."""
    for url in re.findall(r'hx-get="([^"]+)"', body):
        url = html.unescape(url)
        if re.match(pattern, url):
            return url
    return None


class Client:
    """One person's browser, signed in, and their API script."""

    def __init__(self, spec: dict, number: int):
        self.spec, self.number = spec, number
        self.http = httpx.Client(base_url=spec["portal"], timeout=60, follow_redirects=False)
        self.bare = httpx.Client(base_url=spec["bare"], timeout=60)
        job = spec["job_id"]
        self.urls = {"list": "/jobs", "summary": f"/jobs/{job}", "live": f"/jobs/{job}/live",
                     "log_tail": f"/jobs/{job}/logs?after=0",
                     "statuses": f"/jobs/statuses?ids={job}"}
        self.results: dict[str, list[tuple[float, float]]] = {}  # kind: [(start, seconds)]
        self.codes: dict[str, dict[str, int]] = {}  # kind: {status code: answers}
        self.errors: list[dict] = []

    def sign_in(self) -> None:
        page = self.http.get("/login")
        field = re.search(r'<input[^>]*name="csrf_token"[^>]*>', page.text).group(0)
        token = html.unescape(re.search(r'value="([^"]+)"', field).group(1))
        answer = self.http.post("/login", data={
            "email": f"load{self.number}@example.com", "password": PASSWORD,
            "csrf_token": token})
        if not answer.is_redirect or "/login" in answer.headers.get("Location", ""):
            raise RuntimeError(f"sign-in of client {self.number} answered "
                               f"{answer.status_code}: {answer.text[:500]}")

    def request(self, kind: str) -> None:
        started = time.time()
        try:
            if kind == "bare":
                answer = self.bare.get("/")
            elif kind == "collect":
                answer = self.http.post(
                    f"/api/v2/collect/json/{STREAM}",
                    json={"email": f"load{self.number}@example.com", "n": random.random(),
                          "ts": datetime.now(UTC).isoformat()},
                    params={"timestamp_field": "ts"},
                    headers={"Authorization": f"Bearer {self.spec['token']}"})
            else:  # the page's pollers are htmx's requests, and say so as htmx does
                answer = self.http.get(self.urls["live" if kind == "ratio_live" else kind],
                                       headers=HTMX.get(kind, {}))
        except httpx.HTTPError as exc:
            self.errors.append({"kind": kind, "error": repr(exc)})
            return
        took = time.time() - started
        if answer.status_code not in OK[kind]:
            self.errors.append({"kind": kind, "url": str(answer.request.url),
                                "status": answer.status_code, "body": answer.text[:800]})
            return
        self.results.setdefault(kind, []).append((started, took))
        codes = self.codes.setdefault(kind, {})
        # The status code, and for the status block which short answer it was, if any.
        code = "/".join(filter(None, (str(answer.status_code),
                                      answer.headers.get("X-Portal-Poll"))))
        codes[code] = codes.get(code, 0) + 1
        self.follow(kind, answer.text)

    def follow(self, kind: str, body: str) -> None:
        """Take the next poll's URL from what came back, as htmx does."""
        job = self.spec["job_id"]
        if kind == "list":
            found = hx_get(body, r"/jobs/statuses\?")
            if found:
                self.urls["statuses"] = found
        elif kind == "statuses":
            found = hx_get(body, r"/jobs/statuses\?")
            if found:
                self.urls["statuses"] = found
        elif kind in ("summary", "live", "ratio_live"):
            found = hx_get(body, rf"/jobs/{job}/live")
            if found:
                self.urls["live"] = found
            if kind == "summary":
                found = hx_get(body, rf"/jobs/{job}/logs\?after=")
                if found:
                    self.urls["log_tail"] = found
        elif kind == "log_tail":
            found = hx_get(body, rf"/jobs/{job}/logs\?after=")
            if found:
                self.urls["log_tail"] = found

    def run(self, plan: list[tuple[str, float, float]]) -> None:
        """plan: (phase, from, to) in epoch seconds; phases "load", "live", "bare"."""
        step = random.randrange(len(ROUND))
        for phase, start, end in plan:
            while time.time() < start:
                time.sleep(min(0.01, max(start - time.time(), 0)))
            while time.time() < end:
                if phase == "load":
                    kind = ROUND[step % len(ROUND)]
                    step += 1
                else:
                    kind = "ratio_live" if phase == "live" else phase
                self.request(kind)


def clients_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    clients = [Client(spec, number) for number in spec["numbers"]]
    for client in clients:
        client.sign_in()
    print("ready", flush=True)
    plan = json.loads(sys.stdin.readline())
    threads = [threading.Thread(target=client.run, args=(plan,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results: dict[str, list] = {}
    codes: dict[str, dict[str, int]] = {}
    for client in clients:
        for kind, samples in client.results.items():
            results.setdefault(kind, []).extend(samples)
        add_codes(codes, client.codes)
    print(json.dumps({"results": results, "codes": codes,
                      "errors": [e for client in clients for e in client.errors]}), flush=True)


# --- the run ----------------------------------------------------------------------------

def make_csv(rows: int) -> bytes:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    lines = ["email,name,plan,score,ts"]
    lines += [f"user{n}@example.com,User {n},{('free', 'pro', 'team')[n % 3]},{n % 1000},"
              f"{(start + timedelta(seconds=n)).isoformat()}" for n in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def seed(folder: Path, redis_url: str) -> tuple[str, int, str]:
    """A migrated database with an admin, CLIENTS operators, a thousand settled jobs, and
    the import job (running, queued when the worker starts). Returns (database URL, the
    import's id, an API token)."""
    from sqlalchemy import insert
    from werkzeug.security import generate_password_hash

    from bench.common import bench_app
    from portal import datastore, tokens
    from portal.extensions import db
    from portal.jobs import create_job
    from portal.models import Job, User
    from providers import get_provider

    app = bench_app(str(folder), REDIS_URL=redis_url)
    with app.app_context():
        url = db.engine.url.render_as_string(hide_password=False)
        hashed = generate_password_hash(PASSWORD)
        admin = User(email="admin@example.com", role="admin", name="Admin",
                     password_hash=hashed)
        db.session.add(admin)
        db.session.add_all(User(email=f"load{n}@example.com", role="operator",
                                name=f"Load {n}", password_hash=hashed)
                           for n in range(CLIENTS))
        db.session.commit()
        start = datetime(2026, 1, 1, tzinfo=UTC)
        far = datetime.now(UTC) + timedelta(days=30)
        statuses = ("completed", "failed", "paused", "completed", "sleeping")
        db.session.execute(insert(Job), [
            {"name": f"job {n}", "provider": "files", "job_type": "import_file",
             "kind": "import", "queue": "default", "status": statuses[n % 5],
             "created_by_id": admin.id, "config": {}, "schedule": {"kind": "once"},
             "retry_policy": {}, "cursor": {}, "description": "",
             "next_run_at": far if statuses[n % 5] == "sleeping" else None,
             "status_changed_at": start, "updated_at": start,
             "created_at": start + timedelta(seconds=n)} for n in range(1000)])
        db.session.commit()
        provider = get_provider("files")
        upload, info = datastore.store_upload("load.csv", make_csv(ROWS), by=admin)
        job = create_job(provider=provider, job_type=provider.job_type("import_file"),
                         authorization=None, name="Load import",
                         description="The import that runs under the load",
                         config={"upload_id": upload.id, "stream": "imported",
                                 "timestamp_field": "ts", "delimiter": ","},
                         created_by=admin)
        _token, raw = tokens.create(name="load", description="", role="operator", days=None,
                                    by=admin)
        job_id = job.id
        db.session.remove()
        db.engine.dispose()
    return url, job_id, raw


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.time() > deadline:
                raise RuntimeError(f"{url} did not answer in {seconds:.0f} s") from None
            time.sleep(0.2)


def job_state(url: str, job_id: int) -> tuple[str, int]:
    from sqlalchemy import create_engine, text
    engine = create_engine(url)
    with engine.connect() as connection:
        status = connection.execute(text("SELECT status FROM jobs WHERE id = :id"),
                                    {"id": job_id}).scalar()
        rows = connection.execute(text(
            "SELECT count(*) FROM messages JOIN streams ON streams.id = messages.stream_id "
            "WHERE streams.name = 'imported'")).scalar()
    engine.dispose()
    return status, rows


def main() -> None:
    bin_dir = Path(sys.executable).parent
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        portal_port, bare_port = free_port(), free_port()
        redis, redis_url = start_redis(folder)
        processes.append(redis)
        try:
            url, job_id, token = seed(folder, redis_url)
            dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
            suffix = "" if dialect == "sqlite" else "_postgresql"
            env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": url,
                   "REDIS_URL": redis_url, "SECRET_KEY": "bench", "PORTAL_VAULT_KEYS": VAULT_KEYS,
                   "PORTAL_INSTANCE_PATH": str(folder),
                   # Every client signs in from 127.0.0.1: lift the per-address throttle.
                   "PORTAL_LOGIN_LIMIT_ADDRESS": "100000 per minute"}
            logs = open(folder / "servers.log", "w")  # noqa: SIM115
            gunicorn = [str(bin_dir / "gunicorn"), "--workers", "4"]
            processes.append(subprocess.Popen(
                [*gunicorn, "--bind", f"127.0.0.1:{portal_port}", "wsgi:app"], cwd=ROOT,
                env=env, stdout=logs, stderr=logs))
            processes.append(subprocess.Popen(
                [*gunicorn, "--bind", f"127.0.0.1:{bare_port}", "bench.bare_app:app"],
                cwd=ROOT, env=env, stdout=logs, stderr=logs))
            wait_for(f"http://127.0.0.1:{portal_port}/login")
            wait_for(f"http://127.0.0.1:{bare_port}/")
            spec = {"portal": f"http://127.0.0.1:{portal_port}",
                    "bare": f"http://127.0.0.1:{bare_port}", "job_id": job_id, "token": token}
            children = []
            for part in range(PROCESSES):
                numbers = list(range(part, CLIENTS, PROCESSES))
                children.append(subprocess.Popen(
                    [sys.executable, __file__, "--clients",
                     json.dumps({**spec, "numbers": numbers})],
                    cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    text=True))
            processes.extend(children)
            for child in children:
                line = child.stdout.readline()
                if line.strip() != "ready":
                    raise RuntimeError("a client process did not sign in")
            log(f"{CLIENTS} clients signed in ({dialect}); starting the worker and the "
                "dispatcher")
            for role in ("worker", "dispatcher"):
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "workers", role], cwd=ROOT, env=env,
                    stdout=logs, stderr=logs))
            time.sleep(3)  # the import under way
            start = time.time() + 1
            plan = [("load", start, start + SECONDS)]
            at, piece = start + SECONDS, RATIO_SECONDS / SLICES
            for _ in range(SLICES):
                for side in ("live", "bare"):
                    plan.append((side, at, at + piece))
                    at += piece
            for child in children:
                child.stdin.write(json.dumps(plan) + "\n")
                child.stdin.flush()
            time.sleep(max(start + SECONDS - time.time(), 0))
            status_after_load, rows_after_load = job_state(url, job_id)
            outputs = [json.loads(child.communicate(timeout=SECONDS + RATIO_SECONDS + 300)[0])
                       for child in children]
            status_end, rows_end = job_state(url, job_id)
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()

    errors = [error for output in outputs for error in output["errors"]]
    samples: dict[str, list] = {}
    codes: dict[str, dict[str, int]] = {}
    for output in outputs:
        for kind, values in output["results"].items():
            samples.setdefault(kind, []).extend(values)
        add_codes(codes, output["codes"])
    load_kinds = [kind for kind in ROUND if kind in samples]
    load_kinds = list(dict.fromkeys(load_kinds))
    total = sum(len(samples[kind]) for kind in load_kinds)
    log(f"{dialect}: {CLIENTS} clients for {SECONDS:.0f} s, gunicorn --workers 4, one RQ "
        f"worker and the dispatcher; the import ({ROWS:,} rows) was {status_after_load} "
        f"with {rows_after_load:,} rows written at the end of the load, {status_end} with "
        f"{rows_end:,} at the end of the ratio; machine load {os.getloadavg()[0]:.2f}")
    # Figures, not ratios: comments (stdout holds the ratios only).
    log(f"{dialect}: {total:,} requests ({total / SECONDS:.1f}/s), {len(errors)} errors")
    for kind in load_kinds:
        took = [seconds * 1000 for _start, seconds in samples[kind]]
        log(f"{kind}: {len(took)} requests, " + ", ".join(
            f"p{int(share * 100)} {percentile(took, share):.1f} ms" for share in (0.5, 0.95, 0.99))
            + f"; answers {json.dumps(codes.get(kind, {}), sort_keys=True)}")
    # The ratio: requests per second of each side over its slices (each side ran
    # RATIO_SECONDS in all, with the same clients).
    rates = {}
    for side in ("live", "bare"):
        windows = [(begin, end) for phase, begin, end in plan if phase == side]
        done = [s for s in samples.get("bare" if side == "bare" else "ratio_live", [])
                if any(begin <= s[0] < end for begin, end in windows)]
        rates[side] = len(done) / RATIO_SECONDS
        took = [seconds * 1000 for _start, seconds in done]
        kind = "bare" if side == "bare" else "ratio_live"
        log(f"ratio, {side}: {len(done)} requests, {rates[side]:.1f}/s, p50 "
            f"{percentile(took, 0.5):.1f} ms, p95 {percentile(took, 0.95):.1f} ms; answers "
            f"{json.dumps(codes.get(kind, {}), sort_keys=True)}")
    print(f"poll_vs_bare_ratio{suffix}={rates['live'] / rates['bare']:.3f}", flush=True)
    if errors:
        log(f"{len(errors)} errors; the first {min(len(errors), SHOWN_ERRORS)}:")
        for error in errors[:SHOWN_ERRORS]:
            log(json.dumps(error))
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--clients"]:
        clients_main(sys.argv[2])
    else:
        main()
