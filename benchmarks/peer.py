"""The nearest open-source peer: Wagtail 8's one-step group approval, on this same machine.

Our throughput target is stated as ten times this peer's pages per second, measured on these
machines; these machines drift (see machine.py), so the peer is measured here, on the day, by
`make bench-peer`, or alone: `.venv-peer/bin/python -m benchmarks.peer`. It runs in its own
virtualenv, `.venv-peer` (Wagtail 8.0.1, psycopg, dj-database-url; the make targets create it),
never in the project's .venv, and imports nothing of ReviewFlow (no approvals, no reviewflow, no
settings of ours): Django is configured here with `settings.configure()`, the fewest apps
Wagtail's core and admin need to migrate and run their workflows, mail to memory.

DATABASE_URL names the dedicated database,
`postgres://postgres@127.0.0.1:5432/reviewflow_bench_peer` by default; it is DROPPED and recreated
at every run, so its name must contain "bench", and "peer" too, so that a DATABASE_URL left set for
`make bench` (reviewflow_bench) is refused rather than dropped under a running benchmark.

The world is what Wagtail's migrations create: the root page, its home page, the "Editors" and
"Moderators" groups and the default workflow, "Moderators approval" (one GroupApprovalTask for
Moderators) on the root page, so on the home page by descent (checked; created if missing). To it
this adds an editor in Editors and a moderator in Moderators, both with an email address.

This process is the one client: it calls what Wagtail's admin views call, without HTTP, forms or
permission checks. The editor (CreateView.submit_action, wagtail/admin/views/pages/create.py, the
"Submit for moderation" button of a new page): loads the home page, `home.add_child(instance=
Page(...))`, a plain wagtail.models.Page, not live; `page.save_revision(user, log_action=True)`;
`page.get_workflow().start(page, user)`; saves the editor's PageSubscription. The moderator
(WorkflowAction.post, wagtail/admin/views/generic/workflow.py, the "Approve" action): loads the
TaskState by id, `.specific`, its task `.specific`, then `task.on_action(task_state, user,
"approve", comment="")`, which approves the task state, finishes the workflow and publishes the
page's latest revision (wagtail.workflows.publish_workflow_state). Wagtail's admin sends its
notification mails on the way (wagtailadmin/notifications templates, rendered): one to the
moderators when the task starts, one to the editor when the workflow is approved; two per page,
as ReviewFlow's cycle sends two. Set BENCH_PEER_MAIL=0 to give the users no email address (no mail
rendered nor sent; the recipients are still looked up).

Figures, one line each on stdout (progress goes to stderr):
  BENCH peer_wagtail_pages_per_s        pages/s through the whole cycle, median of
                                        BENCH_PEER_RUNS runs of BENCH_PEER_POSTS pages, after
                                        BENCH_PEER_WARMUP cycles
  BENCH peer_wagtail_queries_per_page   SQL queries of one warm cycle (BEGIN, COMMIT and
                                        SAVEPOINTs count, as Django's assertNumQueries counts them)
  BENCH peer_wagtail_client_cpu_ms_per_page  CPU time of this process per page, timed runs
On stderr, first how fast the machine is (`machine.loop_seconds`, the pure-Python loop; not
`machine.orm_milliseconds`, which needs our settings), then this process's CPU time per page by
phase (submit, approve).

Before printing, the run is checked: every page live, its workflow state approved, two mails per
page sent (none with BENCH_PEER_MAIL=0); otherwise it says what is wrong and exits 1.

Knobs (environment): BENCH_PEER_POSTS (300), BENCH_PEER_RUNS (3), BENCH_PEER_WARMUP (10),
BENCH_PEER_MAIL (1).
"""

import itertools
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from .machine import loop_seconds
from .queue import PhaseClock, bench, log, recreate_database

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/reviewflow_bench_peer"
ROOT = Path(__file__).resolve().parent.parent
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
POSTS = int(os.environ.get("BENCH_PEER_POSTS", "300"))
RUNS = int(os.environ.get("BENCH_PEER_RUNS", "3"))
WARMUP = int(os.environ.get("BENCH_PEER_WARMUP", "10"))
MAIL = os.environ.get("BENCH_PEER_MAIL", "1") != "0"

PHASES = ("submit (create, revision, start the workflow)", "approve (and publish)")


def configure(url):
    """Django for Wagtail alone: its core and admin and what they need, on `url`."""
    import dj_database_url
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="peer-benchmark-only",
        ALLOWED_HOSTS=["localhost"],
        DATABASES={"default": dj_database_url.parse(url)},
        INSTALLED_APPS=[
            "wagtail.users",
            "wagtail.admin",
            "wagtail",
            "modelcluster",
            "taggit",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
        ],
        MIDDLEWARE=[],
        # The notification mails link to the admin (`{% url 'wagtailadmin_account' %}`).
        ROOT_URLCONF="wagtail.admin.urls",
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
        ],
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        STATIC_URL="/static/",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        WAGTAIL_SITE_NAME="Peer",
        WAGTAILADMIN_BASE_URL="http://localhost",
    )
    django.setup()


def set_up():
    """(editor, moderator, home page id): Wagtail's own groups and default workflow."""
    from django.contrib.auth.models import Group, User
    from wagtail.models import GroupApprovalTask, Page, Workflow, WorkflowPage, WorkflowTask

    editors, moderators = Group.objects.get(name="Editors"), Group.objects.get(name="Moderators")
    users = []
    for name, group in (("editor", editors), ("moderator", moderators)):
        user = User.objects.create_user(name, f"{name}@example.com" if MAIL else "", "peer")
        user.groups.add(group)
        users.append(User.objects.get(pk=user.pk))  # fresh, as a request would load it
    home = Page.objects.get(depth=2)

    workflow = home.get_workflow()
    tasks = [task.specific for task in workflow.tasks] if workflow else []
    one_step = (
        len(tasks) == 1
        and isinstance(tasks[0], GroupApprovalTask)
        and list(tasks[0].groups.all()) == [moderators]
    )
    if one_step:
        log(
            f"workflow {workflow.name!r} (one GroupApprovalTask, {tasks[0].name!r}) on "
            f"{', '.join(wp.page.title for wp in workflow.workflow_pages.all())!r}, as migrated"
        )
    else:
        log(f"the migrations' workflow is not the one-step one ({workflow!r}): creating it")
        workflow = Workflow.objects.create(name="Moderators approval")
        task = GroupApprovalTask.objects.create(name="Moderators approval")
        task.groups.set([moderators])
        WorkflowTask.objects.create(workflow=workflow, task=task, sort_order=0)
        WorkflowPage.objects.update_or_create(page=home, defaults={"workflow": workflow})
    return users[0], users[1], home.pk


def one_cycle(editor, moderator, home_id, n, after=None):
    """One page through the cycle: (its id, its workflow state's id). `after(phase)`, when
    given, is called as each of the two admin actions returns."""
    from wagtail.models import Page, PageSubscription, TaskState

    after = after or (lambda phase: None)
    # The editor: CreateView.submit_action (wagtail/admin/views/pages/create.py).
    home = Page.objects.get(id=home_id).specific
    page = Page(owner=editor, title=f"Peer page {n}", slug=f"peer-page-{n}", live=False)
    home.add_child(instance=page)
    page.save_revision(user=editor, log_action=True)
    state = page.get_workflow().start(page, editor)
    PageSubscription.objects.create(page=page, user=editor, comment_notifications=True)
    after(PHASES[0])
    # The moderator: WorkflowAction.post (wagtail/admin/views/generic/workflow.py).
    task_state = TaskState.objects.get(id=state.current_task_state_id).specific
    task = task_state.task.specific
    task.on_action(task_state, moderator, "approve", comment="")
    after(PHASES[1])
    return page.pk, state.pk


def check(cycles):
    """What is wrong with these (page id, workflow state id) pairs, as a list of sentences."""
    from django.core import mail
    from wagtail.models import Page, WorkflowState

    page_ids = [page_id for page_id, _ in cycles]
    state_ids = [state_id for _, state_id in cycles]
    problems = []
    not_live = len(page_ids) - Page.objects.filter(pk__in=page_ids, live=True).count()
    if not_live:
        problems.append(f"{not_live} of {len(page_ids)} pages not live")
    pending = (
        Page.objects.filter(pk__in=page_ids, has_unpublished_changes=True).count()
        if not not_live
        else 0
    )
    if pending:
        problems.append(f"{pending} pages live but with unpublished changes")
    approved = WorkflowState.objects.filter(
        pk__in=state_ids, object_id__in=[str(pk) for pk in page_ids], status="approved"
    ).count()
    if approved != len(state_ids):
        problems.append(f"{len(state_ids) - approved} of {len(state_ids)} workflows not approved")
    sent, expected = len(getattr(mail, "outbox", [])), 2 * len(cycles) if MAIL else 0
    if sent != expected:
        problems.append(f"{sent} mails sent, {expected} expected")
    return problems


def checked(cycles, label):
    """Exit 1 if the cycles did not all end in a live page; then forget their mails."""
    from django.core import mail

    problems = check(cycles)
    if problems:
        for problem in problems:
            print(f"peer benchmark, {label}: {problem}", file=sys.stderr, flush=True)
        sys.exit(1)
    mail.outbox = []


def count_queries(editor, moderator, home_id, n):
    """(the cycle, its statements) of one warm cycle."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = {}
    with CaptureQueriesContext(connection) as captured:
        cycle = one_cycle(
            editor, moderator, home_id, n, lambda phase: counts.setdefault(phase, len(captured))
        )
    previous = 0
    for phase, count in counts.items():
        log(f"  {count - previous:4d} statements  {phase}")
        previous = count
    return cycle, len(captured)


def run_beside(database_url, python=PEER_PYTHON):
    """From `make bench`, in the project's virtualenv: run this benchmark in the peer's, on the
    server of `database_url`, pass its figures on, and return its pages/s (None, and a line on
    stderr, when the peer's virtualenv is missing: `make bench-peer` creates it)."""
    if not Path(python).exists():
        log(f"peer: {python} is missing; `make bench-peer` creates it")
        return None
    url = urlsplit(database_url)._replace(path=urlsplit(DEFAULT_DATABASE_URL).path).geturl()
    env = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}
    run = subprocess.run(
        [python, "-m", "benchmarks.peer"],
        cwd=ROOT,
        env={**env, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    print(run.stdout, end="", flush=True)
    return float(re.search(r"^BENCH peer_wagtail_pages_per_s ([0-9.]+)", run.stdout, re.M)[1])


def main():
    url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    if "peer" not in name:
        sys.exit(
            f"Refusing to drop database {name!r}: the peer benchmark recreates its database at "
            "every run, so its name must contain 'bench' and 'peer' (e.g. reviewflow_bench_peer), "
            "never be the database of the project's own benchmarks."
        )
    log(f"machine: a loop of 10**7 additions takes {loop_seconds():.2f} s (machine_loop_s)")
    recreate_database(url)
    configure(url)
    import wagtail
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    log(f"Wagtail {wagtail.__version__}: migrated in {time.perf_counter() - started:.1f} s")
    editor, moderator, home_id = set_up()

    numbers = itertools.count()  # each page's title and slug
    checked([one_cycle(editor, moderator, home_id, next(numbers)) for _ in range(WARMUP)], "warm")
    log(f"warmed with {WARMUP} cycles; statements of one cycle, by phase:")
    cycle, queries = count_queries(editor, moderator, home_id, next(numbers))
    checked([cycle], "the counted cycle")
    log(f"  {queries:4d} statements  in all")

    rates, cycles, cpu = [], [], 0.0
    clock = PhaseClock(PHASES)
    for run in range(RUNS):
        started, run_cpu = time.perf_counter(), time.process_time()
        clock.start()
        batch = [one_cycle(editor, moderator, home_id, next(numbers), clock) for _ in range(POSTS)]
        rate = POSTS / (time.perf_counter() - started)
        cpu += time.process_time() - run_cpu
        checked(batch, f"run {run + 1}")
        cycles += batch
        rates.append(rate)
        log(f"  run {run + 1}: {POSTS} pages at {rate:.1f} pages/s")
    cpu_ms = cpu * 1000 / len(cycles)
    clock.log("this process's CPU time per page:", len(cycles))

    bench("peer_wagtail_pages_per_s", f"{statistics.median(rates):.1f}", "pages/s")
    bench("peer_wagtail_queries_per_page", queries, "queries")
    bench("peer_wagtail_client_cpu_ms_per_page", f"{cpu_ms:.1f}", "ms")


if __name__ == "__main__":
    main()
