"""Email notifications: who is told what, immediate mails or a daily digest, never twice."""

import itertools
import re
import smtplib
import time
from datetime import datetime

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from psycopg.sql import Literal

from approvals import notify, tasks, workflow
from approvals.models import Notification, NotificationPreference

from .conftest import at_once

pytestmark = pytest.mark.django_db


def new_post(world, text="Livret A: 3% net."):
    return workflow.create_post(world.alice, text=text, account_ids=[world.lyon_sandbox.pk])


def written(user, subject, minutes_ago=0, **extra):
    """An immediate row, as `notify._notify` writes it, `minutes_ago` old."""
    created_at = timezone.now() - timezone.timedelta(minutes=minutes_ago)
    return Notification.objects.create(
        user=user, kind="decision", subject=subject, body="-", created_at=created_at, **extra
    )


def smtp(monkeypatch, refuse=(), delay=0):
    """The mail server as `notify` talks to it: refuses these subjects, takes `delay` seconds per
    mail; returns what was seen at each attempt: (subject, a transaction was open)."""
    attempts, real = [], notify.send_mail

    def send_mail(subject, *args):
        attempts.append((subject, connection.in_atomic_block))
        time.sleep(delay)
        if subject in refuse:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return real(subject, *args)

    monkeypatch.setattr(notify, "send_mail", send_mail)
    return attempts


def test_submit_mails_each_reviewer_of_the_group_once_not_the_author_nor_other_teams(
    world, draft, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        workflow.submit(draft.pk, world.alice)
    assert sorted(m.to for m in mailoutbox) == [["rita@example.com"], ["sam@example.com"]]
    mail = mailoutbox[0]
    assert mail.subject.startswith(
        f"Post #{draft.pk} waits for your review (Compliance reviewers, due "
    )
    assert f"http://127.0.0.1:8000/posts/{draft.pk}/" in mail.body
    assert "Default review (v1)" in mail.body  # why the step is there
    assert "Nos conseillers vous accueillent samedi." in mail.body
    rows = Notification.objects.filter(post=draft)
    assert rows.count() == 2
    assert all(row.sent_at is not None and not row.digest for row in rows)


def test_links_use_the_configured_base_url(
    world, draft, mailoutbox, django_capture_on_commit_callbacks, settings
):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "BASE_URL": "https://reviewflow.example.com/"}
    with django_capture_on_commit_callbacks(execute=True):
        workflow.submit(draft.pk, world.alice)
    assert f"https://reviewflow.example.com/posts/{draft.pk}/\n" in mailoutbox[0].body


def test_decision_is_mailed_to_the_author_with_its_reason(
    world, in_review, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        workflow.decide(
            in_review.pk,
            world.rita,
            outcome="request_changes",
            reason="Add the risk warning.",
            revision_hash=in_review.current_revision.content_hash,
        )
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["alice@example.com"]
    assert mail.subject == f"Post #{in_review.pk}: changes requested by rita"
    assert "Reason: Add the risk warning." in mail.body
    assert "The post is now changes requested." in mail.body


def test_digest_user_gets_one_mail_listing_everything_once(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    NotificationPreference.objects.create(user=world.rita, mode="digest")
    first, second = new_post(world), new_post(world, text="Assurance vie: 2,5%.")
    with django_capture_on_commit_callbacks(execute=True):
        workflow.submit(first.pk, world.alice)
        workflow.submit(second.pk, world.alice)
    # sam, immediate, is mailed the first at once; the second, moments later, waits for the
    # mail of the burst (see the burst tests below).
    assert [m.to[0] for m in mailoutbox] == ["sam@example.com"]
    assert Notification.objects.filter(user=world.sam, gathered=True, sent_at=None).count() == 1
    assert Notification.objects.filter(user=world.rita, digest=True, sent_at=None).count() == 2

    mailoutbox.clear()
    tasks.send_digests.delay()
    assert len(mailoutbox) == 1
    digest = mailoutbox[0]
    assert digest.to == ["rita@example.com"]
    assert digest.subject == "ReviewFlow digest: 2 notifications"
    assert f"1. Post #{first.pk} waits for your review" in digest.body
    assert f"2. Post #{second.pk} waits for your review" in digest.body
    assert reverse("notification_preferences") in digest.body
    assert not Notification.objects.filter(digest=True, sent_at=None).exists()

    tasks.send_digests.delay()
    assert len(mailoutbox) == 1  # nothing new, nothing sent twice


def test_an_events_rows_are_one_statement_with_each_persons_choice(
    world, draft, mailoutbox, django_capture_on_commit_callbacks
):
    NotificationPreference.objects.create(user=world.rita, mode="digest")
    written(world.sam, "Earlier", sent_at=timezone.now())  # sam is in a burst
    with (
        django_capture_on_commit_callbacks(execute=True),
        CaptureQueriesContext(connection) as queries,
    ):
        people = [world.rita, world.sam, world.tom, world.tom]
        notify._notify("decision", draft, "Now", "-", users=people)
        assert len(queries) == 1, queries.captured_queries  # the INSERT … SELECT
    rows = Notification.objects.filter(subject="Now").select_related("user", "post")
    assert {(r.user.username, r.post, r.digest, r.gathered) for r in rows} == {
        ("rita", draft, True, False),
        ("sam", draft, False, True),
        ("tom", draft, False, False),
    }
    assert [(m.subject, m.to) for m in mailoutbox] == [("Now", ["tom@example.com"])]


def test_a_notification_is_mailed_once_and_a_lost_one_is_swept(world, draft, mailoutbox):
    row = Notification.objects.create(
        user=world.sam, post=draft, kind="decision", subject="Hello", body="Body"
    )
    tasks.send_notifications.delay()  # the sweep leaves fresh rows to their own task
    assert mailoutbox == []
    tasks.send_notifications.delay([row.pk])
    tasks.send_notifications.delay([row.pk])
    assert [m.subject for m in mailoutbox] == ["Hello"]

    lost = Notification.objects.create(
        user=world.rita,
        post=draft,
        kind="decision",
        subject="Lost",
        body="Body",
        created_at=timezone.now() - timezone.timedelta(minutes=10),
    )
    tasks.send_notifications.delay()
    assert [m.subject for m in mailoutbox] == ["Hello", "Lost"]
    lost.refresh_from_db()
    assert lost.sent_at is not None


def test_people_without_an_email_address_get_no_row(
    world, draft, mailoutbox, django_capture_on_commit_callbacks
):
    world.sam.email = ""
    world.sam.save()
    with django_capture_on_commit_callbacks(execute=True):
        workflow.submit(draft.pk, world.alice)
    assert [m.to for m in mailoutbox] == [["rita@example.com"]]
    assert not Notification.objects.filter(user=world.sam).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_events_mails_cost_two_statements_and_no_transaction_is_open_while_mailing(
    world, mailoutbox, monkeypatch
):
    rows = [written(world.rita, "To Rita"), written(world.sam, "To Sam")]
    attempts = smtp(monkeypatch)
    with CaptureQueriesContext(connection) as queries:
        assert notify.send_immediate([row.pk for row in rows]) == 2
    # The claim that reads the rows with their user's address, then the mark.
    assert [q["sql"].split()[0] for q in queries] == ["UPDATE", "UPDATE"], queries.captured_queries
    assert attempts == [("To Rita", False), ("To Sam", False)]
    assert sorted(m.to[0] for m in mailoutbox) == ["rita@example.com", "sam@example.com"]
    assert not Notification.objects.filter(sent_at=None).exists()
    assert not Notification.objects.exclude(sending_until=None).exists()


def test_a_row_another_runner_is_mailing_is_not_mailed_again(world, mailoutbox):
    row = written(world.sam, "Hello", minutes_ago=10)
    now = timezone.now()
    until = now + notify.SENDING_LEASE
    [claimed] = notify._claim(Notification.objects.filter(pk=row.pk), now, until)
    assert claimed.email == "sam@example.com"
    tasks.send_notifications.delay([row.pk])  # a duplicated message
    tasks.send_notifications.delay()  # the sweep
    assert mailoutbox == []
    notify._finish([claimed], [claimed], until)  # the first runner is done
    row.refresh_from_db()
    assert row.sent_at is not None and row.sending_until is None


def test_the_sweep_takes_the_rows_of_a_runner_whose_lease_expired(world, mailoutbox):
    expired = written(world.sam, "Runner died", minutes_ago=30)
    held = written(world.rita, "Runner mailing", minutes_ago=30)
    Notification.objects.filter(pk=expired.pk).update(
        sending_until=timezone.now() - timezone.timedelta(seconds=1)
    )
    Notification.objects.filter(pk=held.pk).update(
        sending_until=timezone.now() + timezone.timedelta(minutes=5)
    )
    tasks.send_notifications.delay()
    assert [m.subject for m in mailoutbox] == ["Runner died"]
    assert list(Notification.objects.filter(sent_at=None)) == [held]


def test_a_failed_send_leaves_that_row_and_the_later_ones_to_the_next_sweep(
    world, mailoutbox, monkeypatch
):
    rows = [written(world.sam, subject, minutes_ago=10 - n) for n, subject in enumerate("ABC")]
    refused = {"B"}
    attempts = smtp(monkeypatch, refuse=refused)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        tasks.send_notifications.delay([row.pk for row in rows])
    assert [subject for subject, _ in attempts] == ["A", "B"]
    assert [m.subject for m in mailoutbox] == ["A"]
    unsent = Notification.objects.filter(sent_at=None)
    assert [row.subject for row in unsent] == ["B", "C"]
    assert not unsent.exclude(sending_until=None).exists()  # free for the sweep at once

    refused.clear()  # the server is back
    tasks.send_notifications.delay()
    assert [m.subject for m in mailoutbox] == ["A", "B", "C"]
    assert not Notification.objects.filter(sent_at=None).exists()


def test_a_runner_starts_no_mail_in_the_second_half_of_its_lease(world, mailoutbox, monkeypatch):
    rows = [written(world.sam, subject, minutes_ago=10 - n) for n, subject in enumerate("AB")]
    monkeypatch.setattr(notify, "SENDING_LEASE", timezone.timedelta(seconds=1))
    smtp(monkeypatch, delay=0.6)  # past half the lease once A is mailed
    assert notify.send_immediate([row.pk for row in rows]) == 1
    assert [m.subject for m in mailoutbox] == ["A"]
    [left] = Notification.objects.filter(sent_at=None)
    assert left.subject == "B" and left.sending_until is None  # the sweep's, before a new lease


def test_a_row_whose_user_lost_their_email_is_marked_sent_without_mail(world, mailoutbox):
    row = written(world.sam, "Hello")
    world.sam.email = ""
    world.sam.save()
    assert notify.send_immediate([row.pk]) == 0
    assert mailoutbox == []
    row.refresh_from_db()
    assert row.sent_at is not None


def test_a_failed_digest_is_sent_by_the_next_run(world, mailoutbox, monkeypatch):
    NotificationPreference.objects.create(user=world.rita, mode="digest")
    written(world.rita, "Item", digest=True)
    smtp(monkeypatch, refuse={"ReviewFlow digest: 1 notification"})
    with pytest.raises(smtplib.SMTPServerDisconnected):
        notify.send_digests()
    assert Notification.objects.get().sending_until is None
    monkeypatch.undo()
    assert notify.send_digests() == 1
    assert [m.subject for m in mailoutbox] == ["ReviewFlow digest: 1 notification"]
    assert not Notification.objects.filter(sent_at=None).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_runners_mail_each_row_once(world, mailoutbox):
    rows = [written(user, f"To {user}", minutes_ago=10) for user in (world.rita, world.sam)]
    rows += [written(world.alice, f"Item {n}", minutes_ago=10) for n in range(6)]
    ids = [row.pk for row in rows]
    # Duplicated task messages and sweeps, all at once.
    at_once(6, lambda n: notify.send_immediate(ids if n % 2 else None))
    assert sorted(m.subject for m in mailoutbox) == sorted(row.subject for row in rows)
    assert not Notification.objects.filter(sent_at=None).exists()


# --- Bursts ---------------------------------------------------------------------------------------


def submit_burst(world, texts, callbacks):
    posts = [new_post(world, text=text) for text in texts]
    with callbacks(execute=True):
        for post in posts:
            workflow.submit(post.pk, world.alice)
    return posts


def test_a_burst_mails_its_first_event_at_once_and_the_rest_in_one_mail_each(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    first, second, third = submit_burst(
        world,
        ["Livret A: 3% net.", "PEL: 2%.", "Assurance vie: 2,5%."],
        django_capture_on_commit_callbacks,
    )
    assert sorted(m.to[0] for m in mailoutbox) == ["rita@example.com", "sam@example.com"]
    assert all(m.subject.startswith(f"Post #{first.pk} waits") for m in mailoutbox)
    gathered = Notification.objects.filter(gathered=True, sent_at=None)
    assert sorted(gathered.values_list("user__username", flat=True)) == [
        "rita",
        "rita",
        "sam",
        "sam",
    ]

    mailoutbox.clear()
    # Even old enough for the lost-task sweep (the beat was down), they wait for the burst's mail.
    gathered.update(created_at=F("created_at") - notify.STALLED_AFTER * 2)
    tasks.send_notifications.delay()
    assert mailoutbox == []
    tasks.send_gathered_notifications.delay()  # the beat, once a period
    assert sorted(m.to[0] for m in mailoutbox) == ["rita@example.com", "sam@example.com"]
    mail = mailoutbox[0]
    assert mail.subject == "ReviewFlow: 2 notifications"
    assert f"1. Post #{second.pk} waits for your review" in mail.body
    assert f"2. Post #{third.pk} waits for your review" in mail.body
    assert f"http://127.0.0.1:8000/posts/{third.pk}/" in mail.body
    assert not Notification.objects.filter(sent_at=None).exists()
    tasks.send_gathered_notifications.delay()
    assert len(mailoutbox) == 2  # nothing sent twice

    # The burst goes on: one more event waits for the next period, and alone, it is mailed as
    # it was written.
    [fourth] = submit_burst(world, ["PEA: 1%."], django_capture_on_commit_callbacks)
    assert len(mailoutbox) == 2
    tasks.send_gathered_notifications.delay()
    later = mailoutbox[2:]
    assert sorted(m.to[0] for m in later) == ["rita@example.com", "sam@example.com"]
    assert all(m.subject.startswith(f"Post #{fourth.pk} waits for your review") for m in later)
    assert f"Review it: http://127.0.0.1:8000/posts/{fourth.pk}/" in later[0].body

    # Once the burst is over (nothing for a period), the next event is mailed at once again.
    Notification.objects.update(created_at=timezone.now() - timezone.timedelta(seconds=61))
    [fifth] = submit_burst(world, ["CEL: 1,5%."], django_capture_on_commit_callbacks)
    assert all(m.subject.startswith(f"Post #{fifth.pk} waits") for m in mailoutbox[4:])
    assert len(mailoutbox) == 6
    assert not Notification.objects.filter(sent_at=None).exists()


def test_a_burst_to_one_person_does_not_hold_back_another_persons_first_mail(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    written(world.rita, "Moments ago", sent_at=timezone.now())
    submit_burst(world, ["Livret A: 3% net."], django_capture_on_commit_callbacks)
    assert [m.to[0] for m in mailoutbox] == ["sam@example.com"]
    assert Notification.objects.get(gathered=True).user == world.rita


@pytest.mark.usefixtures("hours_apart")
def test_with_bursts_off_every_event_is_mailed_at_once(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    submit_burst(world, ["Livret A: 3% net.", "PEL: 2%."], django_capture_on_commit_callbacks)
    assert len(mailoutbox) == 4
    assert not Notification.objects.filter(gathered=True).exists()


def test_a_failed_burst_mail_is_sent_by_the_next_period(world, mailoutbox, monkeypatch):
    for subject in ("A", "B"):
        written(world.sam, subject, gathered=True)
    smtp(monkeypatch, refuse={"ReviewFlow: 2 notifications"})
    with pytest.raises(smtplib.SMTPServerDisconnected):
        notify.send_gathered()
    assert not Notification.objects.filter(sent_at=None).exclude(sending_until=None).exists()
    monkeypatch.undo()
    assert notify.send_gathered() == 1
    assert [m.subject for m in mailoutbox] == ["ReviewFlow: 2 notifications"]
    assert not Notification.objects.filter(sent_at=None).exists()


@pytest.mark.parametrize("kind", ["gathered", "digest"])
def test_a_persons_many_rows_cost_three_statements_whatever_their_number(world, mailoutbox, kind):
    for person in (world.rita, world.sam):
        for n in range(5):
            written(person, f"Item {n}", **{kind: True})
    send = notify.send_gathered if kind == "gathered" else notify.send_digests
    with CaptureQueriesContext(connection) as queries:
        assert send() == 2
    # Who has rows; then, per person, the claim that reads them and the mark.
    assert len(queries) == 1 + 2 * 2, [q["sql"][:80] for q in queries.captured_queries]
    assert sorted(m.to[0] for m in mailoutbox) == ["rita@example.com", "sam@example.com"]


def test_a_long_burst_mail_lists_the_oldest_and_counts_the_rest(world, mailoutbox, monkeypatch):
    monkeypatch.setattr(notify, "LISTED_AT_MOST", 2)
    for minutes, subject in enumerate(["Oldest", "Second", "Third", "Newest"]):
        written(world.sam, subject, minutes_ago=4 - minutes, gathered=True)
    assert notify.send_gathered() == 1
    [mail] = mailoutbox
    assert mail.subject == "ReviewFlow: 4 notifications"
    assert "1. Oldest" in mail.body and "2. Second" in mail.body
    assert "Third" not in mail.body and "Newest" not in mail.body
    assert (
        "… and 2 more, not listed here: they are all in ReviewFlow, http://127.0.0.1:8000/"
        in mail.body
    )
    assert not Notification.objects.filter(sent_at=None).exists()  # all four are told


# --- Preferences page -----------------------------------------------------------------------------


def test_preferences_page_saves_the_choice(client, world):
    client.force_login(world.rita)
    url = reverse("notification_preferences")
    assert f'href="{url}"' in client.get(reverse("home")).content.decode()  # in the nav
    page = client.get(url).content.decode()
    assert '<label for="id_mode_0">Immediately, one email per event</label>' in page
    assert '<label for="id_mode_1">Once a day, in one digest email</label>' in page
    assert "the rest are gathered: one\nemail every 60 seconds while the burst lasts." in page
    assert re.search(r'<input type="radio" name="mode" value="immediate"[^>]* checked>', page)

    response = client.post(url, {"mode": "digest"})
    assert response.status_code == 302 and response["Location"] == url
    assert NotificationPreference.mode_for(world.rita) == "digest"
    page = client.get(url).content.decode()
    assert "Saved: you will be emailed once a day, in one digest email." in page

    response = client.post(url, {"mode": "hourly"})
    assert response.status_code == 400
    assert "Choose immediate emails or a daily digest." in response.content.decode()
    assert NotificationPreference.mode_for(world.rita) == "digest"
    assert NotificationPreference.objects.filter(user=world.rita).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_digest_runs_send_each_digest_once(world, mailoutbox):
    for user in (world.rita, world.sam):
        NotificationPreference.objects.create(user=user, mode="digest")
        Notification.objects.bulk_create(
            Notification(user=user, kind="decision", subject=f"Item {n}", body="-", digest=True)
            for n in range(3)
        )
    at_once(4, lambda n: notify.send_digests())
    assert sorted(m.to[0] for m in mailoutbox) == ["rita@example.com", "sam@example.com"]
    assert all("3 notifications" in m.subject for m in mailoutbox)
    assert not Notification.objects.filter(sent_at=None).exists()


@pytest.mark.postgres
def test_whether_a_recipient_is_in_a_burst_reads_one_of_their_rows_whatever_the_plan(world, draft):
    """In a campaign every event asks whether its recipients were mailed moments ago. Asked as
    EXISTS(rows since the window's start), a prepared statement's generic plan hashed every row
    of the window, so each event of a burst cost more than the last; the newest row of each
    recipient, read backwards on their index, costs one row whatever the plan."""
    for n in range(60):
        written(world.sam if n % 2 else world.tom, f"Earlier {n}")
    written(world.alice, "Alice's last")
    recipients = notify._recipients(
        user_ids=(world.alice.pk, world.rita.pk),
        group_ids=(),
        team_id=draft.team_id,
        author_id=draft.author_id,
        since=notify._burst_since(),
    )
    sql, params = recipients.sql_with_params()
    numbers = itertools.count(1)
    numbered = re.sub(r"%s", lambda _: f"${next(numbers)}", sql).replace("%%", "%")
    kinds = {bool: "boolean", int: "bigint", str: "text", datetime: "timestamptz"}
    types = [next(kinds[k] for k in kinds if isinstance(param, k)) for param in params]
    with connection.cursor() as cursor:
        cursor.execute(f"PREPARE recipients ({', '.join(types)}) AS {numbered}")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        # A utility statement takes no bound parameters: the values go in as literals.
        values = ", ".join(Literal(param).as_string(connection.connection) for param in params)
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE recipients({values})")
        [plan] = cursor.fetchone()[0]
        cursor.execute(f"EXECUTE recipients({values})")
        assert sorted(cursor.fetchall()) == sorted(
            [(world.alice.pk, False, True), (world.rita.pk, False, False)]
        )
        cursor.execute("DEALLOCATE recipients")

    def rows_read(node):
        own = node["Actual Rows"] * node["Actual Loops"]
        read = own if node.get("Relation Name") == "approvals_notification" else 0
        return read + sum(rows_read(child) for child in node.get("Plans", []))

    assert rows_read(plan["Plan"]) <= 2  # at most one row for each of the two recipients
