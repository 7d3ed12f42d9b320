"""Email notifications: who is told what, immediate mails or a daily digest, never twice."""

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals import tasks, workflow
from approvals.models import Notification, NotificationPreference

pytestmark = pytest.mark.django_db


def new_post(world, text="Livret A: 3% net."):
    return workflow.create_post(world.alice, text=text, account_ids=[world.lyon_sandbox.pk])


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
    assert sorted(m.to[0] for m in mailoutbox) == ["sam@example.com", "sam@example.com"]
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
    assert not Notification.objects.filter(sent_at=None).exists()

    tasks.send_digests.delay()
    assert len(mailoutbox) == 1  # nothing new, nothing sent twice


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


# --- Preferences page -----------------------------------------------------------------------------


def test_preferences_page_saves_the_choice(client, world):
    client.force_login(world.rita)
    url = reverse("notification_preferences")
    assert f'href="{url}"' in client.get(reverse("home")).content.decode()  # in the nav
    page = client.get(url).content.decode()
    assert '<label for="id_mode_0">Immediately, one email per event</label>' in page
    assert '<label for="id_mode_1">Once a day, in one digest email</label>' in page
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
    from approvals import notify

    from .conftest import at_once

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
