"""Prepared queries (approvals.prepared): built and compiled once, each run with its own values,
and refused when a value would be frozen into the SQL instead of sent as a parameter."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import Membership, Notification
from approvals.prepared import prepared

pytestmark = pytest.mark.django_db


@prepared
def members_of(*, team_id, since):
    """Team members with their team read along, and whether they had mail since `since`."""
    User = get_user_model()
    mailed = Notification.objects.filter(user=OuterRef("user_id"), created_at__gte=since)
    return (
        Membership.objects.filter(team_id=team_id)
        .select_related("team", "user")
        .annotate(mailed=Exists(mailed), groups=Count("user__groups"))
        .order_by("user__username")
        .filter(user__in=User.objects.filter(is_active=True))
    )


def _as_read(memberships):
    return [(m.user.username, m.team.name, m.mailed, m.groups) for m in memberships]


def test_each_run_reads_what_the_queryset_reads_with_its_own_values(world):
    Membership.objects.create(user=world.carla, team=world.lyon)
    Notification.objects.create(user=world.alice, kind="decision", subject="s", body="b")
    earlier, later = (timezone.now() + timezone.timedelta(minutes=m) for m in (-1, 1))
    for team, since in [(world.lyon, later), (world.paris, later), (world.lyon, earlier)]:
        plain = members_of.build(team_id=team.pk, since=since)
        with CaptureQueriesContext(connection) as queries:
            rows = members_of(team_id=team.pk, since=since).all()
        assert len(queries) == 1
        assert _as_read(rows) == _as_read(plain)
    assert _as_read(members_of(team_id=world.lyon.pk, since=later).all()) == [
        ("alice", "Lyon", False, 0),
        ("carla", "Lyon", False, 1),
    ]
    assert _as_read(members_of(team_id=world.lyon.pk, since=earlier).all())[0] == (
        "alice",
        "Lyon",
        True,
        0,
    )


@prepared
def users_among(*, ids):
    return get_user_model().objects.filter(pk__in=ids).order_by("username")


def test_a_list_of_each_length_is_its_own_query_and_an_empty_one_reads_nothing(world):
    named = [u.username for u in users_among(ids=(world.sam.pk, world.alice.pk)).all()]
    assert named == ["alice", "sam"]
    assert [u.username for u in users_among(ids=[world.tom.pk]).all()] == ["tom"]
    with CaptureQueriesContext(connection) as queries:
        assert users_among(ids=()).all() == []
    assert len(queries) == 0


@prepared
def user(*, pk):
    return get_user_model().objects.filter(pk=pk)


def test_an_id_no_column_holds_matches_nothing_instead_of_failing(world):
    assert user(pk=world.rita.pk).get() == world.rita
    with pytest.raises(get_user_model().DoesNotExist):
        user(pk=10**30).get()


@prepared
def named_like(*, word):
    return get_user_model().objects.filter(username__contains=word).order_by("username")


@prepared
def first_users(*, count):
    return get_user_model().objects.order_by("username")[:count]


@pytest.mark.parametrize(
    "query, values, answers",
    [
        (named_like, [{"word": "ri"}, {"word": "am"}], [["rita"], ["sam"]]),
        (first_users, [{"count": 1}, {"count": 2}], [["alice"], ["alice", "bruno"]]),
    ],
)
def test_a_value_the_sql_would_hold_other_than_as_a_parameter_runs_unprepared(
    world, caplog, query, values, answers
):
    """Prepared, the word would be frozen inside '%ri%', and the count in the LIMIT."""
    assert [[u.username for u in query(**one).all()] for one in values] == answers
    assert f"{query.__qualname__} runs unprepared" in caplog.text


@prepared
def unsent(*, user_id, sent_at):
    return Notification.objects.filter(user_id=user_id, sent_at=sent_at)


def test_an_update_sets_its_own_values_on_the_rows_the_query_reads(world):
    for person in (world.rita, world.rita, world.sam):
        Notification.objects.create(user=person, kind="decision", subject="Hi", body="-")
    sent = [
        unsent(user_id=world.rita.pk, sent_at=None).update(
            sent_at=when, digest=True, body=F("subject"), subject="Sent"
        )
        for when in (timezone.now(), timezone.now() + timezone.timedelta(hours=1))
    ]
    assert sent == [2, 0]  # the second finds them sent
    rows = Notification.objects.order_by("pk")
    assert [(r.user.username, r.subject, r.body, r.digest) for r in rows] == [
        ("rita", "Sent", "Hi", True),
        ("rita", "Sent", "Hi", True),
        ("sam", "Hi", "-", False),
    ]
    assert unsent(user_id=world.rita.pk, sent_at=rows[0].sent_at).update(subject="Again") == 2


@prepared
def user_locked(*, pk):
    return get_user_model().objects.select_for_update().filter(pk=pk)


@pytest.mark.postgres  # SQLite has no locking read; Django lets it through there
@pytest.mark.django_db(transaction=True)
def test_a_locking_read_outside_a_transaction_is_refused_as_django_refuses_it(world):
    with transaction.atomic():
        assert user_locked(pk=world.rita.pk).get() == world.rita
    with pytest.raises(TransactionManagementError):  # compiled already: refused all the same
        user_locked(pk=world.rita.pk).all()


def test_a_post_through_the_whole_cycle_runs_every_query_of_the_workflow_prepared(
    world, client, caplog, django_capture_on_commit_callbacks
):
    """The reads and updates of every post (approvals/workflow.py, notify, publishing, the
    connectors, the post's page) all compile: none falls back to running unprepared."""
    from approvals import access, notify, publishing, workflow

    from .conftest import login, through_review

    queries = [
        workflow._locked,
        workflow._open_steps_of,
        workflow._publication_counts,
        workflow._usable,
        workflow._tags,
        notify._recipients,
        publishing._targets,
        publishing._claimable,
        publishing._claimed,
        publishing._held,
        access._visible_post,
    ]
    for query in queries:
        query._compiled.clear()
    caplog.set_level("WARNING", logger="approvals.prepared")
    post = through_review(world, django_capture_on_commit_callbacks, [world.lyon_sandbox], "Hi")
    login(client, world.rita)
    assert client.get(f"/posts/{post.pk}/").status_code == 200

    assert post.state == "published"
    assert "unprepared" not in caplog.text
    assert [q.__qualname__ for q in queries if not any(q._compiled.values())] == []
