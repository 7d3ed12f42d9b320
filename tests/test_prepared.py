"""Prepared queries (approvals.prepared): built and compiled once, each run with its own values,
and refused when a value would be frozen into the SQL instead of sent as a parameter."""

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef
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
    return get_user_model().objects.filter(username__contains=word)


@prepared
def first_users(*, count):
    return get_user_model().objects.order_by("pk")[:count]


@pytest.mark.parametrize("query", [named_like, first_users])
def test_a_value_the_sql_would_hold_other_than_as_a_parameter_is_refused(world, query):
    values = {"word": "ri"} if query is named_like else {"count": 2}
    with pytest.raises(ImproperlyConfigured, match="cannot be prepared"):
        query(**values).all()


@prepared
def user_locked(*, pk):
    return get_user_model().objects.select_for_update().filter(pk=pk)


@pytest.mark.django_db(transaction=True)
def test_a_locking_read_outside_a_transaction_is_refused_as_django_refuses_it(world):
    with transaction.atomic():
        assert user_locked(pk=world.rita.pk).get() == world.rita
    with pytest.raises(TransactionManagementError):  # compiled already: refused all the same
        user_locked(pk=world.rita.pk).all()
