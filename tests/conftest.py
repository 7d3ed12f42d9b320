"""Shared personas and the switches between embedded parts and real services.

Personas (as healthchecks' alice/bob/charlie): in team Lyon, advisor alice and reviewers rita and
sam; in team Paris, advisor bruno and reviewer tom; carla, compliance admin.
"""

import importlib
import os
import shutil
import threading
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group, Permission
from django.db import connection
from guardian.shortcuts import assign_perm

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # required with live_server

REQUIRE_SERVICES = os.environ.get("REVIEWFLOW_REQUIRE_SERVICES") == "1"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PASSWORD = "correct horse battery"


def _redis_reason():
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis"):
        return "CELERY_BROKER_URL is not a Redis URL"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        return f"Redis at {url} does not answer: {error}"
    return None


def _missing(marker):
    if marker == "postgres":
        from django.conf import settings

        engine = settings.DATABASES["default"]["ENGINE"]
        return None if "postgresql" in engine else "DATABASE_URL is not a PostgreSQL URL"
    if marker == "redis":
        return _redis_reason()
    if marker == "browser":
        return None if shutil.which(CHROMIUM) else f"no Chromium at {CHROMIUM}"
    return None


def pytest_runtest_setup(item):
    for marker in ("postgres", "redis", "browser"):
        if item.get_closest_marker(marker) and (reason := _missing(marker)):
            if REQUIRE_SERVICES:
                pytest.fail(f"REVIEWFLOW_REQUIRE_SERVICES=1 but {reason}")
            pytest.skip(reason)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ],
    }


SHIPPED_DATA = [  # data migrations whose rows a transactional test's flush removes
    "approvals.migrations.0003_default_route",
    "approvals.migrations.0007_default_network_rules",
    "approvals.migrations.0008_default_lexicon",
    "approvals.migrations.0009_default_disclaimers",
    "approvals.migrations.0014_config_version",  # the configuration's version row
]


@pytest.fixture(autouse=True)
def _database_as_migrated(request):
    """Every test sees the database as `migrate` leaves it: triggers on, shipped data present.

    A transactional test ends with a flush (DELETE on SQLite, TRUNCATE on PostgreSQL) that the
    ledger's triggers rightly refuse, so they are removed just before it and reinstalled for the
    next test; the flush also empties the shipped rules, lexicon and disclaimers and the
    configuration's version row, so transactional tests put them back first (each migration's
    function is idempotent).
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = (marker and marker.kwargs.get("transaction")) or (
        {"transactional_db", "live_server"} & set(request.fixturenames)
    )
    if not marker and not transactional and "db" not in request.fixturenames:
        yield
        return
    from approvals.ledger import set_append_only

    request.getfixturevalue("transactional_db" if transactional else "db")
    set_append_only(connection, True)
    if transactional:
        for module in SHIPPED_DATA:
            importlib.import_module(module).create(django_apps, None)
    yield
    if transactional:
        set_append_only(connection, False)


def make_user(django_user_model, username, **extra):
    return django_user_model.objects.create_user(
        username, f"{username}@example.com", PASSWORD, **extra
    )


@pytest.fixture
def media_root(settings, tmp_path):
    """Stored files (images, ledger exports) in the test's own folder."""
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


@pytest.fixture
def hours_apart(settings):
    """For events a test runs seconds apart that are hours apart in life (a review request,
    then its escalation): each is mailed at once, none gathered as a burst (see notify)."""
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "MAIL_BURST_SECONDS": 0}


@pytest.fixture
def world(django_user_model):
    """The personas, two teams and their accounts."""
    from approvals.models import Membership, SocialAccount, Team

    lyon, paris = Team.objects.create(name="Lyon"), Team.objects.create(name="Paris")
    w = SimpleNamespace(lyon=lyon, paris=paris)
    for name in ("alice", "bruno", "rita", "sam", "tom", "carla"):
        setattr(w, name, make_user(django_user_model, name))
    Membership.objects.create(user=w.alice, team=lyon)
    Membership.objects.create(user=w.bruno, team=paris)
    for reviewer in (w.rita, w.sam):
        assign_perm("approvals.review_team", reviewer, lyon)
    assign_perm("approvals.review_team", w.tom, paris)
    # The catch-all rule shipped by migration 0003 routes every post to this group.
    w.reviewers = Group.objects.get(name="Compliance reviewers")
    w.reviewers.user_set.add(w.rita, w.sam, w.tom)
    w.carla.is_staff = True
    w.carla.save()
    admins = Group.objects.create(name="Compliance admins")
    admins.permissions.set(  # as the demo's compliance admins: the ledger is view-only
        Permission.objects.filter(content_type__app_label="approvals").exclude(
            codename__in=["add_ledgerentry", "change_ledgerentry", "delete_ledgerentry"]
        )
    )
    w.carla.groups.add(admins)
    w.lyon_sandbox = SocialAccount.objects.create(
        team=lyon, network="sandbox", name="Lyon branch", handle="@lyon", validated=True
    )
    w.paris_sandbox = SocialAccount.objects.create(
        team=paris, network="sandbox", name="Paris branch", handle="@paris", validated=True
    )
    w.lyon_unvalidated = SocialAccount.objects.create(
        team=lyon, network="sandbox", name="Lyon pending", validated=False
    )
    return w


@pytest.fixture
def draft(world):
    """A draft by alice for the Lyon sandbox account."""
    from approvals import workflow

    return workflow.create_post(
        world.alice,
        text="Nos conseillers vous accueillent samedi. Rates < 3% & no fees.",
        account_ids=[world.lyon_sandbox.pk],
    )


@pytest.fixture
def in_review(world, draft):
    from approvals import workflow

    return workflow.submit(draft.pk, world.alice)


@pytest.fixture
def changes_requested(world, in_review):
    """That post after rita asked for changes to its first revision."""
    from approvals import workflow

    workflow.decide(
        in_review.pk,
        world.rita,
        outcome="request_changes",
        reason="Add the risk warning.",
        revision_hash=in_review.current_revision.content_hash,
    )
    return in_review


def at_once(count, work):
    """Run `work(n)` in `count` threads released together; each closes its own connection."""
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(n):
        try:
            barrier.wait(timeout=30)
            results[n] = work(n)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def login(client, user):
    client.force_login(user)
    return client


# --- A post through the whole review --------------------------------------------------------------


def through_review(world, callbacks, accounts, text, link="", *, publish_at=None, execute=True):
    """alice drafts a post to `accounts` and submits it, rita approves. Without a publish time,
    or with one passed, the approval releases the post; the commit's callbacks (its deliveries,
    done at once as Celery is eager) run only if `execute`. Returns the post as it is now."""
    from approvals import workflow
    from approvals.models import Post

    post = workflow.create_post(
        world.alice,
        text=text,
        link=link,
        account_ids=[account.pk for account in accounts],
        publish_at=publish_at,
    )
    workflow.submit(post.pk, world.alice)
    with callbacks(execute=execute):
        workflow.decide(
            post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
        )
    return Post.objects.get(pk=post.pk)


# --- What a release leaves for the commit --------------------------------------------------------


def enqueued_deliveries(callbacks):
    """The publication ids that these on-commit callbacks send for delivery, in order: those of
    a release (`workflow._release`) and any other that calls `publishing.enqueue_deliveries`;
    [] when no delivery waits for the commit.

    Read by running those callbacks with the broker replaced: nothing is sent, nothing delivered,
    and the other callbacks (the notifications' mail) are left alone.
    """
    from unittest import mock

    from approvals import tasks

    def sends_deliveries(callback):
        code = getattr(callback, "__code__", None)
        return callback.__qualname__.startswith("_release.") or (
            code is not None and "enqueue_deliveries" in code.co_names
        )

    sent = []
    with mock.patch.object(tasks, "send", lambda task, *args, **_: sent.append((task, args))):
        for callback in filter(sends_deliveries, callbacks):
            callback()
    assert {task.name for task, _ in sent} <= {"approvals.tasks.deliver_publication"}, sent
    return [args[0] for _, args in sent]


def released_with_approval(post):
    """Assert the ledger shows the post approved then released, one entry after the other: the
    release ran in the approval's transaction, under its lock (nothing came in between)."""
    from approvals.models import LedgerEntry

    entries = list(LedgerEntry.objects.filter(post_id=post.pk).order_by("seq"))
    approved, released = entries[-2:]
    assert (approved.event, released.event) == ("post.approved", "post.released")
    assert released.seq == approved.seq + 1
    assert released.payload["from"] == "approved" and released.payload["to"] == "publishing"
    assert sorted(released.payload["publications"]) == sorted(approved.payload["publications"])
    return approved, released


# --- Webhook receiver (tests/webhook_receiver.py) ------------------------------------------------


@pytest.fixture
def webhook_receiver():
    """A real local HTTP server that verifies Standard Webhooks signatures; see its module."""
    from tests.webhook_receiver import WebhookReceiver

    with WebhookReceiver() as receiver:
        yield receiver


def webhook_account(world, receiver):
    """A validated webhook account of team Lyon, pointing at `receiver` with a fresh secret that
    the receiver is given to verify signatures."""
    from approvals.models import SocialAccount

    account = SocialAccount(
        team=world.lyon,
        network="webhook",
        name="Lyon intranet",
        handle="@lyon-hook",
        settings={"url": receiver.url, "secret": ""},
        validated=True,
    )
    account.full_clean()  # generates the whsec_ secret
    account.save()
    receiver.secret = account.settings["secret"]
    return account


@pytest.fixture
def hook_account(world, webhook_receiver):
    return webhook_account(world, webhook_receiver)
