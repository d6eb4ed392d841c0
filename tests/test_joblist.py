"""The job list: filters, search, sort, keyset pages, counts, live status cells and bulk
actions."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from portal.extensions import db
from portal.models import AuditEntry, Job, JobEvent
from portal.models.types import utcnow

HX = {"HX-Request": "true"}


@pytest.fixture
def seed(app, make_user):
    """Jobs inserted straight into the table (many of them, quickly)."""
    owner = make_user("operator", "owner@example.com")

    def insert_jobs(rows: list[dict]) -> list[int]:
        now = utcnow()
        base = {"provider": "files", "job_type": "import_file", "kind": "import",
                "queue": "default", "status": "completed", "created_by_id": owner.id,
                "config": {}, "schedule": {"kind": "once"}, "retry_policy": {}, "cursor": {},
                "description": "", "status_changed_at": now, "updated_at": now}
        values = [{**base, "name": f"job {n}", "created_at": now - timedelta(minutes=n),
                   **row} for n, row in enumerate(rows)]
        db.session.execute(insert(Job), values)
        db.session.commit()
        return list(db.session.scalars(select(Job.id).order_by(Job.id)))

    return insert_jobs


def names(page: str) -> list[str]:
    return re.findall(r'<a href="/jobs/\d+">([^<]*)</a>', page)


def listing(client, **args) -> str:
    return client.get("/jobs", query_string=args).get_data(as_text=True)


def test_filters_search_and_counts(client, auth, seed):
    auth.login("viewer")
    seed([
        {"name": "Nightly CRM", "status": "running", "description": "crm feed"},
        {"name": "Newsletter export", "kind": "export", "provider": "webhook",
         "job_type": "send_stream", "status": "sleeping"},
        {"name": "Old import", "status": "completed"},
        {"name": "Broken", "status": "failed", "description": "the NIGHTLY one"},
    ])
    assert len(names(listing(client))) == 4
    assert names(listing(client, status="failed")) == ["Broken"]
    assert names(listing(client, type="export")) == ["Newsletter export"]
    assert names(listing(client, provider="webhook")) == ["Newsletter export"]
    assert sorted(names(listing(client, q="nightly"))) == ["Broken", "Nightly CRM"]
    assert "Old import" not in names(listing(client, completed="0"))
    # A link made by a form without scripts carries the hidden "off" twin first.
    assert "Old import" in names(listing(client, completed=["0", "1"]))
    page = listing(client, q="nightly")
    # Counts per status follow the other filters; the tabs keep them in their links.
    assert re.search(r'data-status-tab="failed">Failed <span[^>]*>1<', page)
    assert re.search(r'data-status-tab="completed">Completed <span[^>]*>0<', page)
    assert 'href="/jobs?status=failed&amp;q=nightly"' in page
    assert "No jobs match these filters." in listing(client, q="zzz")
    assert len(names(listing(client, status="bogus", sort="nope"))) == 4, "bad values ignored"


@pytest.mark.parametrize("sort", ["name", "status", "created", "last_run", "next_run",
                                  "authorization", "provider", "type"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_every_sort_pages_without_gaps_or_overlaps(client, auth, seed, sort, direction):
    auth.login("viewer")
    now = utcnow()
    seed([{"name": f"job {n % 7:02d}-{n:03d}", "status": ["running", "failed"][n % 2],
           "last_run_at": now - timedelta(hours=n % 5) if n % 3 else None,
           "next_run_at": now + timedelta(hours=n % 4) if n % 2 else None}
          for n in range(120)])
    seen: list[str] = []
    url = f"/jobs?sort={sort}&dir={direction}"
    pages = 0
    while url:
        page = client.get(url).get_data(as_text=True)
        seen += names(page)
        pages += 1
        found = re.search(r'href="([^"]+)" id="next-page"', page)
        url = found.group(1).replace("&amp;", "&") if found else ""
    assert pages == 3 and len(seen) == 120 and len(set(seen)) == 120


def test_sort_orders_are_right(client, auth, seed):
    auth.login("viewer")
    seed([{"name": "b"}, {"name": "a"}, {"name": "c"}])
    assert names(listing(client, sort="name", dir="asc")) == ["a", "b", "c"]
    assert names(listing(client, sort="name", dir="desc")) == ["c", "b", "a"]
    assert names(listing(client)) == ["b", "a", "c"], "newest first by default"


# Five jobs whose order differs under every sort: what each sort compares, per job.
# Ties (two "running", two "export", two without a last run) are broken by id.
SORT_ROWS = [
    # name, provider, kind, status, minutes after now for (last run, next run), label
    ("delta", "mailchimp", "export", "running", (-30, None), "Bravo key"),
    ("alpha", "webhook", "import", "sleeping", (None, 90), None),
    ("echo", "files", "enrichment", "failed", (-10, 20), "Alpha key"),
    ("charlie", "hubspot", "export", "running", (None, 5), "Delta key"),
    ("bravo", "slack", "import", "completed", (-50, None), "Charlie key"),
]


@pytest.mark.parametrize("sort", ["created", "name", "authorization", "provider", "type",
                                  "status", "last_run", "next_run"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_every_sort_orders_by_its_own_column(client, auth, seed, make_user, sort, direction):
    from portal.models import Authorization

    auth.login("viewer")
    owner = make_user("admin", "keys@example.com")
    now = utcnow().replace(microsecond=0)
    labels = {}
    for label in sorted({row[5] for row in SORT_ROWS if row[5]}):
        authorization = Authorization(provider="files", method="none", label=label,
                                      owner_id=owner.id)
        db.session.add(authorization)
        db.session.flush()
        labels[label] = authorization.id
    db.session.commit()

    def at(minutes):
        return None if minutes is None else now + timedelta(minutes=minutes)

    ids = seed([{"name": name, "provider": provider, "kind": kind, "status": status,
                 "last_run_at": at(runs[0]), "next_run_at": at(runs[1]),
                 "authorization_id": labels.get(label)}
                for name, provider, kind, status, runs, label in SORT_ROWS])
    epoch = now.replace(year=1970)  # no run sorts as the earliest time
    by = {"created": lambda n: -n,  # the seed makes each row a minute older than the last
          "name": lambda n: SORT_ROWS[n][0],
          "authorization": lambda n: SORT_ROWS[n][5] or "",
          "provider": lambda n: SORT_ROWS[n][1],
          "type": lambda n: SORT_ROWS[n][2],
          "status": lambda n: SORT_ROWS[n][3],
          "last_run": lambda n: at(SORT_ROWS[n][4][0]) or epoch,
          "next_run": lambda n: at(SORT_ROWS[n][4][1]) or epoch}[sort]
    expected = [SORT_ROWS[n][0] for n in sorted(range(5), key=lambda n: (by(n), ids[n]))]
    if direction == "desc":
        expected.reverse()
    assert names(listing(client, sort=sort, dir=direction)) == expected
    # Not the order the rows were made in, whichever way, for any sort but "created".
    made = [row[0] for row in SORT_ROWS]
    assert (expected in (made, made[::-1])) == (sort == "created")


def test_the_authorization_sort_follows_renames_and_reassigns(client, auth, seed, make_user):
    """The label the list sorts by is kept on each job by the database (triggers): taken
    on insert, on a change of authorization and when an authorization is renamed."""
    from portal import vault
    from portal.models import Authorization

    auth.login("viewer")
    admin = make_user("admin", "keys@example.com")
    first, second = (Authorization(provider="files", method="none", label=label,
                                   owner_id=admin.id) for label in ("Alpha", "Bravo"))
    db.session.add_all([first, second])
    db.session.commit()
    ids = seed([{"name": "on alpha", "authorization_id": first.id},
                {"name": "on bravo", "authorization_id": second.id},
                {"name": "on none"}])

    def labels() -> dict[str, str]:
        db.session.expire_all()
        return dict(db.session.execute(select(Job.name, Job.authorization_label)).all())

    assert labels() == {"on alpha": "Alpha", "on bravo": "Bravo", "on none": ""}
    assert names(listing(client, sort="authorization", dir="asc")) == [
        "on none", "on alpha", "on bravo"]
    vault.edit_details(first, label="Zulu", description="", by=admin)
    db.session.commit()
    assert labels()["on alpha"] == "Zulu", "a rename reaches the jobs"
    assert names(listing(client, sort="authorization", dir="asc")) == [
        "on none", "on bravo", "on alpha"]
    job = db.session.get(Job, ids[2])
    job.authorization_id = second.id  # an edit of the job through the ORM
    db.session.commit()
    assert labels()["on none"] == "Bravo"
    vault.reassign(second, first, by=admin)
    db.session.commit()
    assert labels() == {"on alpha": "Zulu", "on bravo": "Zulu", "on none": "Zulu"}


def test_live_cells_poll_only_rows_that_can_change(client, auth, seed):
    auth.login("viewer")
    ids = seed([{"status": "running"}, {"status": "completed"}, {"status": "sleeping"}])
    page = listing(client)
    poller = re.search(r'id="status-poller" hx-get="([^"]+)"', page).group(1)
    assert poller == f"/jobs/statuses?ids={ids[0]},{ids[2]}"
    response = client.get(f"/jobs/statuses?ids={ids[0]},{ids[2]}", headers=HX)
    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    assert f'<span id="job-status-{ids[0]}" hx-swap-oob="true">' in fragment
    db.session.execute(Job.__table__.update().values(status="completed"))
    db.session.commit()
    response = client.get(f"/jobs/statuses?ids={ids[0]},{ids[2]}", headers=HX)
    assert response.status_code == 286, "nothing can change any more: stop polling"
    assert 'data-status="completed"' in response.get_data(as_text=True)
    assert "status-poller" not in response.get_data(as_text=True)
    assert "status-poller" not in listing(client), "no poller when nothing can change"


def test_bulk_pause_confirms_the_count_and_reports_each_job(client, auth, seed):
    auth.login("operator")
    ids = seed([{"name": "one", "status": "sleeping"}, {"name": "two", "status": "running"},
                {"name": "three", "status": "completed"}])
    form = {"csrf_token": auth.csrf(), "action": "pause", "ids": [str(i) for i in ids]}
    confirm = client.post("/jobs/bulk/confirm", data=form, headers=HX).get_data(as_text=True)
    # The question says which jobs it will be done to, and which not and why, before asking.
    assert "Pause 2 of the 3 selected jobs?" in confirm and "one (sleeping)" in confirm
    assert "three: a completed job cannot be paused" in confirm
    assert re.findall(r'name="ids" value="(\d+)"', confirm) == [str(ids[0]), str(ids[1])]
    assert ">Pause 2 jobs</button>" in confirm
    assert db.session.scalar(select(Job.status).where(Job.id == ids[0])) == "sleeping"
    # Nothing the action can be done to: said, and no button to do it.
    nothing = client.post("/jobs/bulk/confirm", headers=HX, data={
        **form, "ids": [str(ids[2])]}).get_data(as_text=True)
    assert "None of the 1 selected job can be paused." in nothing
    assert "bulk-confirm-button" not in nothing and "three: a completed job" in nothing
    # The jobs may change between the question and the answer: each is checked again.
    response = client.post("/jobs/bulk", data=form, headers=HX)
    assert response.headers["HX-Trigger"] == "jobs-changed"
    page = response.get_data(as_text=True)
    assert "Pause: 2 of 3 jobs done" in page
    assert "three: a completed job cannot be paused" in page
    statuses = dict(db.session.execute(select(Job.name, Job.status)).all())
    assert statuses == {"one": "paused", "two": "paused", "three": "completed"}
    paused_events = db.session.scalars(select(JobEvent).where(JobEvent.kind == "paused")).all()
    assert len(paused_events) == 2


def test_bulk_delete_refuses_running_jobs_and_audits(client, auth, seed):
    auth.login("operator")
    ids = seed([{"name": "busy", "status": "running"}, {"name": "done", "status": "completed"}])
    form = {"csrf_token": auth.csrf(), "action": "delete", "ids": [str(i) for i in ids]}
    confirm = client.post("/jobs/bulk/confirm", data=form, headers=HX).get_data(as_text=True)
    assert "Delete 1 of the 2 selected jobs? Their logs are deleted too" in confirm
    assert "busy: it is running; pause it first, then delete it" in confirm
    # Sent with both (a page that asked earlier): the running one is still refused.
    page = client.post("/jobs/bulk", data=form, headers=HX).get_data(as_text=True)
    assert "busy: it is running; pause it first" in page and "done: done" in page
    assert db.session.scalars(select(Job.name)).all() == ["busy"]
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "deleted"))
    assert entry.object_label == "done" and entry.object_type == "job"


def test_viewers_get_no_bulk_controls_and_are_refused(client, auth, seed):
    auth.login("viewer")
    ids = seed([{"status": "sleeping"}])
    assert "bulk-actions" not in listing(client) and 'name="ids"' not in listing(client)
    response = client.post("/jobs/bulk", data={"csrf_token": auth.csrf(), "action": "pause",
                                               "ids": [str(ids[0])]})
    assert response.status_code == 403


def test_markup_in_names_is_text(client, auth, seed):
    auth.login("viewer")
    seed([{"name": "<img src=x onerror=alert(1)>"}])
    page = listing(client)
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page


def test_the_kept_counts_follow_every_insert_status_change_and_delete(client, auth, seed):
    from sqlalchemy import delete, func, update

    from portal.jobs import JobFilter, status_counts

    auth.login("viewer")
    ids = seed([{"status": s} for s in ("running", "running", "sleeping", "failed")])
    db.session.execute(update(Job).where(Job.id == ids[0]).values(status="completed"))
    db.session.execute(update(Job).where(Job.id == ids[1]).values(name="renamed"))
    db.session.execute(delete(Job).where(Job.id == ids[3]))
    db.session.commit()
    actual = dict(db.session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    assert status_counts(JobFilter()) == actual == {"completed": 1, "running": 1,
                                                     "sleeping": 1}
    page = listing(client)
    assert re.search(r'data-status-tab="completed">Completed <span[^>]*>1<', page)
    assert re.search(r'>All <span[^>]*>3<', page)


def test_a_job_retrying_after_errors_is_shown_and_filtered_apart(client, auth, seed):
    """A sleeping job in an error streak shows as Retrying (amber, with the streak) and has
    its own tab; a healthy sleeping job stays Sleeping (blue). Both stay stored as
    sleeping, so the Sleeping tab counts both."""
    auth.login("viewer")
    ids = seed([{"name": "Healthy", "status": "sleeping"},
                {"name": "Flaky", "status": "sleeping", "error_count": 3},
                {"name": "Once", "status": "sleeping", "error_count": 1},
                {"name": "Broken", "status": "failed", "error_count": 9}])
    page = listing(client)
    badge = r'<span id="job-status-{}"><span class="badge text-bg-{} status-badge" ' \
            r'data-status="{}" data-shown="{}">{}</span>'
    assert re.search(badge.format(ids[0], "sleeping", "sleeping", "sleeping", "Sleeping"), page)
    assert re.search(badge.format(ids[1], "retrying", "sleeping", "retrying",
                                  r"Retrying \(3 errors in a row\)"), page)
    assert "Retrying (1 error in a row)" in page
    assert re.search(badge.format(ids[3], "failed", "failed", "failed", "Failed"), page)
    assert re.search(r'data-status-tab="retrying"[^>]*>Retrying <span[^>]*>2<', page)
    assert re.search(r'data-status-tab="sleeping">Sleeping <span[^>]*>3<', page)
    assert re.search(r'>All <span[^>]*>4<', page), "Retrying is not counted twice"
    assert sorted(names(listing(client, status="retrying"))) == ["Flaky", "Once"]
    assert len(names(listing(client, status="sleeping"))) == 3
    filtered = listing(client, status="retrying", q="flaky")
    assert names(filtered) == ["Flaky"]
    assert re.search(r'data-status-tab="retrying"[^>]*>Retrying <span[^>]*>1<', filtered)
    # The summary's status is the same badge.
    summary = client.get(f"/jobs/{ids[1]}").get_data(as_text=True)
    assert 'data-shown="retrying">Retrying (3 errors in a row)</span>' in summary
    assert ".text-bg-retrying" in client.get("/static/portal.css").get_data(as_text=True)


def test_search_folds_the_case_of_every_letter(client, auth, seed):
    """Not only ASCII letters (SQLite's LIKE folds only those): the one rule of every
    search box, portal.textsearch."""
    auth.login("viewer")
    seed([{"name": "Überweisungen Ärzte", "status": "running"},
          {"name": "Ecole", "status": "running"},
          {"name": "Lycée", "status": "running", "description": "ÉCOLE DES ÉLÈVES"}])
    assert names(listing(client, q="überweis")) == ["Überweisungen Ärzte"]
    assert names(listing(client, q="ÄRZTE")) == ["Überweisungen Ärzte"]
    assert names(listing(client, q="élèves")) == ["Lycée"], "in the description too"
    assert names(listing(client, q="école")) == ["Lycée"]
    assert names(listing(client, q="ecole")) == ["Ecole"], "an accent is a letter of its own"
    assert names(listing(client, q="%")) == []
