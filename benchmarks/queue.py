"""The reviewer queue page on PostgreSQL with 100,000 posts across 20 teams.

Run by `make bench` (or `python -m benchmarks`). DATABASE_URL names a dedicated database,
`postgres://postgres@127.0.0.1:5432/reviewflow_bench` by default; its name must contain
"bench", because the database is DROPPED and recreated at every run, so that each run measures
the same freshly loaded, freshly analysed data (no sessions, claims or decisions left by an
earlier run). Loading takes well under a minute: rows are streamed with COPY in chunks.

The data: 20 teams of 10 advisors, 24 reviewers each granted 3 teams (guardian object
permissions) in 1 to 4 of 4 reviewer groups; 100,000 posts, 20% in review (a compliance step
on every one, a parallel legal step on a quarter, a waiting second stage on a tenth, quorum 2 on
15%, overdue and escalated steps, live and lapsed claims, a quarter resubmitted after changes
were requested), the rest drafts or decided long ago with their closed steps and decisions.
The measured reviewer (reviewer00) is in every group, so has the longest queue.

Figures, one line each on stdout (progress goes to stderr):
  BENCH load_s            seconds to migrate, load and analyse
  BENCH posts_total       posts in the database
  BENCH queue_total       review steps waiting for the measured reviewer (all pages)
  BENCH queue_rows        rows on the measured page
  BENCH queue_queries     SQL queries per request of the page
  BENCH queue_p50_ms      median server time of the page over BENCH_REQUESTS requests
  BENCH queue_p95_ms      95th percentile of the same
The plan of the page's queries (EXPLAIN ANALYZE, BUFFERS) is written to
$REVIEWFLOW_VAR_DIR/bench/queue_plan.txt.

Knobs (environment): BENCH_POSTS (100000), BENCH_REQUESTS (200), BENCH_WARMUP (10).
"""

import math
import os
import random
import statistics
import sys
import time
from datetime import timedelta

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/reviewflow_bench"
N_POSTS = int(os.environ.get("BENCH_POSTS", "100000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "10"))
N_TEAMS = 20
ADVISORS_PER_TEAM = 10
N_REVIEWERS = 24
CHUNK = 10_000
SEED = 20240603

# A realistic mix: a fifth of the posts wait for review, most are long published.
STATES = [
    ("in_review", 0.20),
    ("published", 0.52),
    ("approved", 0.05),
    ("draft", 0.08),
    ("changes_requested", 0.05),
    ("rejected", 0.04),
    ("withdrawn", 0.04),
    ("failed", 0.01),
    ("expired", 0.01),
]

WORDS = (
    "Nos conseillers vous accueillent samedi pour parler de votre épargne retraite; taux "
    "garanti, frais réduits, capital at risk, past performance is no guide, rendez-vous en "
    "agence, simulation gratuite, assurance vie, PEA, crédit immobilier, offre valable jusqu'au"
).split()


def log(message):
    print(message, file=sys.stderr, flush=True)


def bench(name, value, unit):
    print(f"BENCH {name} {value} {unit}", flush=True)


class PhaseClock:
    """This process's CPU time by phase of a cycle: `start()` as a cycle begins, then call the
    clock with each phase's name as that phase ends (the cycles' `after`)."""

    def __init__(self, phases):
        self.seconds = dict.fromkeys(phases, 0.0)
        self.start()

    def start(self):
        self.mark = time.process_time()

    def __call__(self, phase):
        now = time.process_time()
        self.seconds[phase] += now - self.mark
        self.mark = now

    def log(self, heading, count):
        """Log the CPU time per cycle of each phase, over `count` cycles."""
        log(heading)
        for phase, seconds in self.seconds.items():
            log(f"    {seconds * 1000 / count:5.1f} ms  {phase}")


# --- the database ---------------------------------------------------------------------------------


def recreate_database(url):
    """Drop and create the dedicated database (refusing any name without "bench")."""
    import dj_database_url
    import psycopg
    from psycopg import sql

    config = dj_database_url.parse(url)
    if "postgresql" not in config["ENGINE"]:
        sys.exit(f"The queue benchmark needs PostgreSQL; DATABASE_URL is {url!r}.")
    name = config["NAME"]
    if "bench" not in name:
        sys.exit(
            f"Refusing to drop database {name!r}: the benchmark recreates its database at every "
            "run, so its name must contain 'bench' (e.g. reviewflow_bench)."
        )
    params = {
        "dbname": "postgres",
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
    }
    try:
        admin = psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True)
    except psycopg.OperationalError as error:
        sys.exit(f"Cannot reach PostgreSQL for {url!r}: {error}")
    with admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    log(f"database {name}: dropped and created")


def copy_rows(cursor, connection, model, objects):
    """COPY model instances into their table: every concrete column, defaults applied."""
    if not objects:
        return
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for obj in objects:
            copy.write_row([f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields])


# --- the data -------------------------------------------------------------------------------------


class World:
    """Teams, advisors, reviewers and groups: small, created with the ORM."""

    def __init__(self, now):
        from django.contrib.auth.models import Group, User
        from guardian.shortcuts import assign_perm

        from approvals.models import Membership, SocialAccount, Team

        self.teams = Team.objects.bulk_create(
            Team(name=f"Branch {n:02d}") for n in range(1, N_TEAMS + 1)
        )
        self.accounts = SocialAccount.objects.bulk_create(
            SocialAccount(
                team=team,
                network="sandbox",
                name=f"{team.name} page",
                handle=f"@branch{team.pk}",
                validated=True,
                validated_at=now,
            )
            for team in self.teams
        )
        self.account_of = {account.team_id: account.pk for account in self.accounts}
        self.advisors = {team.pk: [] for team in self.teams}
        users = []
        for team in self.teams:
            for n in range(ADVISORS_PER_TEAM):
                users.append(User(username=f"advisor{team.pk:02d}_{n}", password="!"))
        users = User.objects.bulk_create(users)
        memberships = []
        for index, user in enumerate(users):
            team = self.teams[index // ADVISORS_PER_TEAM]
            self.advisors[team.pk].append(user)
            memberships.append(Membership(user=user, team=team))
        Membership.objects.bulk_create(memberships)

        self.compliance = Group.objects.get(name="Compliance reviewers")  # migration 0003
        self.legal, _ = Group.objects.get_or_create(name="Legal")
        self.marketing, _ = Group.objects.get_or_create(name="Marketing compliance")
        self.senior, _ = Group.objects.get_or_create(name="Senior compliance")
        self.reviewers = User.objects.bulk_create(
            User(username=f"reviewer{k:02d}", password="!") for k in range(N_REVIEWERS)
        )
        self.team_reviewers = {team.pk: [] for team in self.teams}
        for k, reviewer in enumerate(self.reviewers):
            # Each reviewer is granted three teams; each team has three or four reviewers.
            for t in {k % N_TEAMS, (k + 7) % N_TEAMS, (k + 13) % N_TEAMS}:
                assign_perm("approvals.review_team", reviewer, self.teams[t])
                self.team_reviewers[self.teams[t].pk].append(reviewer)
            reviewer.groups.add(self.compliance)
            if k % 3 == 0:
                reviewer.groups.add(self.legal)
            if k % 4 == 0:
                reviewer.groups.add(self.marketing)
            if k < 4:
                reviewer.groups.add(self.senior)
        # reviewer00: three teams and every group, so the longest queue; the one measured.
        self.measured = self.reviewers[0]


class Chunk:
    """The rows of up to CHUNK posts, with ids given here (the database is fresh)."""

    ids = {"revision": 0, "step": 0, "decision": 0, "claim": 0, "link": 0}

    def __init__(self, world):
        self.world = world
        self.posts, self.revisions, self.links = [], [], []
        self.steps, self.decisions, self.claims = [], [], []

    def next_id(self, kind):
        self.ids[kind] += 1
        return self.ids[kind]

    def revision(self, rng, post, number, author, created):
        from approvals.models import Revision

        revision = Revision(
            id=self.next_id("revision"),
            post_id=post.id,
            number=number,
            text=" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))),
            link="https://example.com/offre" if rng.random() < 0.3 else "",
            content_hash=f"{self.ids['revision']:064x}",
            created_by_id=author.pk,
            created_at=created,
        )
        self.revisions.append(revision)
        self.links.append(
            Revision.accounts.through(
                id=self.next_id("link"),
                revision_id=revision.id,
                socialaccount_id=self.world.account_of[post.team_id],
            )
        )
        return revision

    def step(self, post, revision, group, state, quorum=1, stage=1, **extra):
        from approvals.models import ReviewStep

        step = ReviewStep(
            id=self.next_id("step"),
            post_id=post.id,
            revision_id=revision.id,
            group_id=group.pk,
            quorum=quorum,
            stage=stage,
            state=state,
            due_hours=8,
            business_hours=True,
            escalation_group_id=self.world.senior.pk,
            reasons=[{"rule": "Default review", "version": 1}],
            **extra,
        )
        self.steps.append(step)
        return step

    def decision(self, post, step, revision, reviewer, outcome, created):
        from approvals.models import Decision

        self.decisions.append(
            Decision(
                id=self.next_id("decision"),
                post_id=post.id,
                step_id=step.id,
                revision_id=revision.id,
                reviewer_id=reviewer.pk,
                outcome=outcome,
                reason="" if outcome == "approve" else "Add the risk warning, please.",
                content_hash=revision.content_hash,
                created_at=created,
            )
        )

    def claim(self, step, reviewer, claimed_at):
        from approvals.models import StepClaim

        self.claims.append(
            StepClaim(
                id=self.next_id("claim"),
                step_id=step.id,
                reviewer_id=reviewer.pk,
                claimed_at=claimed_at,
            )
        )

    def save(self):
        from django.db import connection, transaction

        from approvals.models import Decision, Post, ReviewStep, Revision, StepClaim

        # One transaction per chunk: posts and revisions point at each other, and Django's
        # foreign keys are DEFERRABLE INITIALLY DEFERRED on PostgreSQL.
        with transaction.atomic(), connection.cursor() as wrapper:
            cursor = wrapper.cursor  # psycopg's own cursor, for COPY
            copy_rows(cursor, connection, Post, self.posts)
            copy_rows(cursor, connection, Revision, self.revisions)
            copy_rows(cursor, connection, Revision.accounts.through, self.links)
            copy_rows(cursor, connection, ReviewStep, self.steps)
            copy_rows(cursor, connection, Decision, self.decisions)
            copy_rows(cursor, connection, StepClaim, self.claims)


def add_post(chunk, rng, world, now, post_id, state):
    """One post as the workflow would have left it in `state`, with its route's history."""
    from approvals.models import Post, ReviewStep
    from approvals.models.posts import State

    steps = ReviewStep.State
    team = world.teams[post_id % N_TEAMS]
    author = rng.choice(world.advisors[team.pk])
    team_reviewers = world.team_reviewers[team.pk]
    age = timedelta(minutes=rng.uniform(30, 60 * 24 * 60))
    submitted = None if state == State.DRAFT else now - age
    post = Post(id=post_id, team_id=team.pk, author_id=author.pk, state=state)
    chunk.posts.append(post)

    if state != State.IN_REVIEW:
        revision = chunk.revision(rng, post, 1, author, submitted or now - age)
        post.current_revision_id = revision.id
        post.submitted_at = submitted
        if rng.random() < 0.3:
            post.publish_at = (submitted or now) + timedelta(hours=rng.uniform(1, 240))
        if state == State.DRAFT:
            return
        step_state, outcome = {
            State.REJECTED: (steps.REJECTED, "reject"),
            State.CHANGES_REQUESTED: (steps.CHANGES_REQUESTED, "request_changes"),
            State.WITHDRAWN: (steps.CANCELLED, None),
        }.get(state, (steps.APPROVED, "approve"))
        decided = submitted + timedelta(minutes=rng.uniform(5, 600))
        step = chunk.step(
            post,
            revision,
            world.compliance,
            step_state,
            activated_at=submitted,
            due_at=submitted + timedelta(hours=8),
            completed_at=decided,
        )
        if outcome:
            chunk.decision(post, step, revision, rng.choice(team_reviewers), outcome, decided)
        if outcome == "approve":
            post.approved_revision_id = revision.id
            post.approved_at = decided
            post.approval_expires_at = decided + timedelta(days=90)
        return

    # In review: submitted in the last two days, half with a publish time, a few at risk.
    submitted = post.submitted_at = now - timedelta(minutes=rng.uniform(5, 60 * 48))
    if rng.random() < 0.5:
        post.publish_at = now + timedelta(minutes=rng.uniform(-60, 60 * 24 * 7))
        if rng.random() < 0.06:
            post.publish_at_risk_since = now - timedelta(minutes=rng.uniform(1, 90))
    number = 1
    if rng.random() < 0.25:  # resubmitted after changes were requested on revision 1
        first = chunk.revision(rng, post, 1, author, submitted - timedelta(days=1))
        old = chunk.step(post, first, world.compliance, steps.CHANGES_REQUESTED)
        chunk.decision(post, old, first, rng.choice(team_reviewers), "request_changes", submitted)
        number = 2
    revision = chunk.revision(rng, post, number, author, submitted)
    post.current_revision_id = revision.id
    due_at = None if rng.random() < 0.05 else now + timedelta(minutes=rng.uniform(-720, 2400))
    escalated = due_at is not None and due_at < now and rng.random() < 0.8
    active = {"activated_at": submitted, "due_at": due_at}
    main = chunk.step(
        post,
        revision,
        world.compliance,
        steps.ACTIVE,
        quorum=2 if rng.random() < 0.15 else 1,
        escalated_at=due_at + timedelta(minutes=1) if escalated else None,
        **active,
    )
    open_steps = [main]
    if rng.random() < 0.25:  # a parallel legal review
        open_steps.append(chunk.step(post, revision, world.legal, steps.ACTIVE, **active))
    if rng.random() < 0.10:  # a second stage, waiting
        chunk.step(post, revision, world.marketing, steps.WAITING, stage=2)
    if main.quorum == 2 and rng.random() < 0.5:  # one of two approvals given
        chunk.decision(post, main, revision, rng.choice(team_reviewers), "approve", submitted)
    for step in open_steps:
        roll = rng.random()
        if roll < 0.12:  # someone took it: a live claim (8%) or a lapsed one (4%)
            minutes = rng.uniform(1, 25) if roll < 0.08 else rng.uniform(40, 600)
            chunk.claim(step, rng.choice(team_reviewers), now - timedelta(minutes=minutes))


def load_posts(world, now):
    from django.core.management.color import no_style
    from django.db import connection

    from approvals.models import Decision, Post, ReviewStep, Revision, StepClaim

    rng = random.Random(SEED)
    bounds, total = [], 0.0
    for state, share in STATES:
        total += share
        bounds.append((total, state))
    for start in range(0, N_POSTS, CHUNK):
        chunk = Chunk(world)
        for post_id in range(start + 1, min(start + CHUNK, N_POSTS) + 1):
            roll = rng.random() * total
            state = next(state for bound, state in bounds if roll <= bound)
            add_post(chunk, rng, world, now, post_id, state)
        chunk.save()
        log(f"  loaded {start + len(chunk.posts):,} posts")

    models = [Post, Revision, Revision.accounts.through, ReviewStep, Decision, StepClaim]
    with connection.cursor() as cursor:
        for statement in connection.ops.sequence_reset_sql(no_style(), models):
            cursor.execute(statement)
        cursor.execute("VACUUM ANALYZE")


# --- the measure ----------------------------------------------------------------------------------


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def explain(connection, queries, path):
    """EXPLAIN ANALYZE every query of one page request, into a file for whoever tunes it."""
    with connection.cursor() as cursor, open(path, "w", encoding="utf-8") as out:
        for query in queries:
            sql = query["sql"]
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            out.write(sql + "\n\n")
            out.write("\n".join(row[0] for row in cursor.fetchall()))
            out.write("\n\n" + "-" * 100 + "\n\n")


def measure(world):
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from approvals.access import review_queue
    from approvals.models import Post

    client = Client()
    client.force_login(world.measured)
    url = reverse("review_queue")
    for _ in range(WARMUP):
        assert client.get(url).status_code == 200
    times = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    page = response.content.decode()

    plan = settings.VAR_DIR / "bench" / "queue_plan.txt"
    plan.parent.mkdir(parents=True, exist_ok=True)
    explain(connection, captured.captured_queries, plan)
    log(f"query plans: {plan}")

    bench("posts_total", Post.objects.count(), "posts")
    bench("queue_total", review_queue(world.measured).count(), "steps")
    bench("queue_rows", page.count('<tr id="step-'), "rows")
    bench("queue_queries", len(captured), "queries")
    bench("queue_p50_ms", f"{statistics.median(times):.1f}", "ms")
    bench("queue_p95_ms", f"{percentile(times, 0.95):.1f}", "ms")


def load():
    """Recreate the database, migrate it and load the posts; (the world, the seconds it took)."""
    url = os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    recreate_database(url)

    import django
    from django.core.management import call_command
    from django.utils import timezone

    django.setup()
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    log(f"migrated in {time.perf_counter() - started:.1f} s")
    now = timezone.now()
    world = World(now)
    load_posts(world, now)
    log(f"loaded and analysed in {time.perf_counter() - started:.1f} s")
    return world, time.perf_counter() - started


def main():
    world, seconds = load()
    bench("load_s", f"{seconds:.1f}", "s")
    measure(world)
