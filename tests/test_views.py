"""What each role sees: the advisor's home, the reviewer's queue and review page, the admin."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals import workflow
from approvals.models import LedgerEntry, Post, RevisionView, SocialAccount

from .conftest import PASSWORD, through_review

pytestmark = pytest.mark.django_db


def test_logged_out_user_is_sent_to_login_from_every_page(client, in_review):
    for url in [
        reverse("home"),
        reverse("post_create"),
        reverse("post_detail", args=[in_review.pk]),
        reverse("review_queue"),
        reverse("sandbox_index"),
    ]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_bad_credentials_get_a_clear_error(client, world):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302


def test_a_request_reads_its_user_with_their_team_in_one_statement(
    client, world, django_assert_num_queries
):
    """Every page asks whether the user is an advisor and composing reads their team: both come
    with the user (access.UserWithTeamBackend), for a reviewer too (no membership, no query)."""
    for person, team in ((world.alice, world.lyon), (world.rita, None)):
        client.force_login(person)
        user = client.get(reverse("home")).wsgi_request.user
        with django_assert_num_queries(0):
            membership = getattr(user, "membership", None)
            assert (membership and membership.team) == team
    world.alice.is_active = False
    world.alice.save()
    client.force_login(world.alice)  # as if her session had been opened before she was disabled
    response = client.get(reverse("home"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_home_lists_the_advisors_posts_by_state(client, world, draft, in_review):
    other = workflow.create_post(
        world.alice, text="Second draft", account_ids=[world.lyon_sandbox.pk]
    )
    client.force_login(world.alice)
    page = client.get(reverse("home")).content.decode()
    assert page.index("Draft") < page.index("Second draft")
    assert "In review" in page
    assert reverse("post_detail", args=[other.pk]) in page


def test_review_page_has_decision_buttons_for_reviewers_only(client, world, in_review):
    url = reverse("post_detail", args=[in_review.pk])
    client.force_login(world.rita)
    page = client.get(url).content.decode()
    for button in ("Approve", "Request changes", "Reject"):
        assert f">{button}</button>" in page
    client.force_login(world.alice)
    page = client.get(url).content.decode()
    assert ">Approve</button>" not in page
    response = client.post(
        reverse("post_decide", args=[in_review.pk]),
        {"outcome": "approve", "revision_hash": in_review.current_revision.content_hash},
    )
    assert response.status_code == 403
    assert "your own post" in response.content.decode()


def changes_requested_then_resubmitted(world, post):
    """rita asks for changes to revision 1; alice adds the warning and submits revision 2."""
    workflow.decide(
        post.pk,
        world.rita,
        outcome="request_changes",
        reason="Add the warning",
        revision_hash=post.current_revision.content_hash,
    )
    workflow.edit_post(
        post.pk,
        world.alice,
        text="Nos conseillers vous accueillent samedi. Capital at risk.",
        account_ids=[world.lyon_sandbox.pk],
    )
    workflow.submit(post.pk, world.alice)


def test_the_review_page_reads_as_much_whatever_the_history(client, world, in_review):
    """The reviewer's page reads the same statements for a post with no decision yet and for one
    reviewed, changed and resubmitted: nothing is read per decision or revision (both have one
    step: a read per step would not show here)."""
    other = workflow.create_post(
        world.alice, text="Portes ouvertes.", account_ids=[world.lyon_sandbox.pk]
    )
    workflow.submit(other.pk, world.alice)
    changes_requested_then_resubmitted(world, in_review)
    client.force_login(world.sam)

    def statements(post):
        client.get(reverse("post_detail", args=[post.pk]))  # the session, sam's first view
        with CaptureQueriesContext(connection) as page:
            assert client.get(reverse("post_detail", args=[post.pk])).status_code == 200
        return len(page)

    assert statements(in_review) == statements(other)


def test_resubmission_shows_word_diff_against_revision_reviewer_saw(client, world, in_review):
    client.force_login(world.rita)
    client.get(reverse("post_detail", args=[in_review.pk]))  # rita sees revision 1
    changes_requested_then_resubmitted(world, in_review)
    page = client.get(reverse("post_detail", args=[in_review.pk])).content.decode()
    assert "Changes since revision 1" in page
    assert "<ins>Capital at risk.</ins>" in page
    assert "<del>Rates &lt; 3% &amp; no fees.</del>" in page
    # Seen now: the view moved to revision 2, and the page shows no change since.
    seen = RevisionView.objects.get(user=world.rita, post=in_review)
    assert seen.revision == Post.objects.get(pk=in_review.pk).current_revision
    page = client.get(reverse("post_detail", args=[in_review.pk])).content.decode()
    assert "Changes since revision" not in page


def test_a_reviewer_who_never_saw_the_post_gets_the_diff_against_the_last_decision(
    client, world, in_review
):
    changes_requested_then_resubmitted(world, in_review)
    client.force_login(world.sam)  # never opened the post
    page = client.get(reverse("post_detail", args=[in_review.pk])).content.decode()
    assert "Changes since revision 1" in page
    assert "<ins>Capital at risk.</ins>" in page
    assert "Add the warning" in page  # the earlier decision, listed


def test_preview_counts_characters_left_per_network(client, world):
    client.force_login(world.alice)
    response = client.post(
        reverse("post_preview"),
        {"text": "x" * 120, "accounts": [world.lyon_sandbox.pk]},
        headers={"HX-Request": "true"},
    )
    assert "380 characters left of 500" in response.content.decode()


def test_timeline_shows_who_did_what_with_reasons(client, world, in_review):
    workflow.decide(
        in_review.pk,
        world.sam,
        outcome="request_changes",
        reason="Mention the fees <clearly>",
        revision_hash=in_review.current_revision.content_hash,
    )
    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[in_review.pk])).content.decode()
    assert "requested changes on revision 1" in page
    assert "Mention the fees &lt;clearly&gt;" in page


def test_ledger_is_read_only_in_admin_and_admin_changes_are_logged(client, world, draft):
    client.force_login(world.carla)
    entry = LedgerEntry.objects.first()
    change_url = reverse("admin:approvals_ledgerentry_change", args=[entry.pk])
    assert client.get(reverse("admin:approvals_ledgerentry_changelist")).status_code == 200
    assert client.post(change_url, {"event": "forged"}).status_code == 403
    assert client.get(reverse("admin:approvals_ledgerentry_add")).status_code == 403
    response = client.post(
        reverse("admin:approvals_socialaccount_add"),
        {
            "team": world.lyon.pk,
            "network": "webhook",
            "name": "Lyon CRM",
            "handle": "",
            "validated": "on",
            "settings": '{"url": "https://crm.example.com/hook", "secret": ""}',
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    account = SocialAccount.objects.get(name="Lyon CRM")
    assert account.settings["secret"].startswith("whsec_")
    assert account.validated_by == world.carla
    logged = LedgerEntry.objects.get(event="admin.socialaccount.added")
    assert logged.actor == "carla" and logged.payload["after"]["name"] == "Lyon CRM"
    assert "secret" not in str(logged.payload)


def test_reviewer_grants_and_memberships_changed_in_admin_are_logged(client, world):
    client.force_login(world.carla)
    url = reverse(
        "admin:approvals_team_permissions_manage_user", args=[world.paris.pk, world.sam.pk]
    )
    response = client.post(url, {"permissions": ["review_team"]})
    assert response.status_code == 302
    assert world.sam.has_perm("approvals.review_team", world.paris)
    entry = LedgerEntry.objects.get(event="admin.team.grant_changed")
    assert entry.actor == "carla"
    assert entry.payload["user"] == "sam" and entry.payload["after"] == ["review_team"]


def test_team_membership_changed_in_admin_is_logged(client, world, django_user_model):
    newcomer = django_user_model.objects.create_user("nina")
    client.force_login(world.carla)
    response = client.post(
        reverse("admin:approvals_team_change", args=[world.lyon.pk]),
        {
            "name": "Lyon",
            "memberships-TOTAL_FORMS": "2",
            "memberships-INITIAL_FORMS": "1",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-id": world.alice.membership.pk,
            "memberships-0-user": world.alice.pk,
            "memberships-0-team": world.lyon.pk,
            "memberships-1-user": newcomer.pk,
            "memberships-1-team": world.lyon.pk,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = LedgerEntry.objects.get(event="admin.membership.saved")
    assert entry.actor == "carla" and entry.payload == {"team": world.lyon.pk, "user": "nina"}


def test_post_page_says_until_when_an_approval_holds(client, world, settings):
    from django.utils import timezone

    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "APPROVAL_VALID_DAYS": 30}
    post = workflow.create_post(
        world.alice,
        text="Webinaire retraite jeudi.",
        account_ids=[world.lyon_sandbox.pk],
        publish_at=timezone.now() + timezone.timedelta(days=2),
    )
    post = workflow.submit(post.pk, world.alice)
    workflow.decide(
        post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
    )
    post.refresh_from_db()
    assert post.state == "approved"  # waits for its publish time
    expected = timezone.localtime(timezone.now() + timezone.timedelta(days=30))
    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert f"approval valid until {expected:%-d %b %Y}" in page


# --- The compose form's "Submit for review" -------------------------------------------------------

SUBMIT_BUTTON = '<button type="submit" name="submit" value="1" class="primary">'


def test_submit_for_review_from_the_new_post_form(client, world):
    client.force_login(world.alice)
    form = client.get(reverse("post_create")).content.decode()
    assert f"{SUBMIT_BUTTON}Submit for review</button>" in form
    assert 'name="comment"' in form  # the note to reviewers goes with it
    response = client.post(
        reverse("post_create"),
        {
            "text": "Portes ouvertes samedi.",
            "accounts": [world.lyon_sandbox.pk],
            "comment": "Pour la campagne <printemps>.",
            "submit": "1",
        },
    )
    post = Post.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("post_detail", args=[post.pk])
    assert post.state == "in_review"
    submitted = LedgerEntry.objects.get(post_id=post.pk, event="post.submitted")
    assert submitted.payload["comment"] == "Pour la campagne <printemps>."
    page = client.get(response["Location"]).content.decode()
    assert "Submitted for review." in page and "Draft saved." not in page
    assert "Pour la campagne &lt;printemps&gt;." in page  # in the timeline, escaped


def test_a_blocked_submit_shows_the_form_again_as_typed_and_saves_nothing(client, world):
    client.force_login(world.alice)
    entries = LedgerEntry.objects.count()
    response = client.post(
        reverse("post_create"),
        {"text": "Rendement garanti de 8 % !", "accounts": [world.lyon_sandbox.pk], "submit": "1"},
    )
    assert response.status_code == workflow.Blocked.status == 400
    page = response.content.decode()
    assert '<div class="error" role="alert">Fix this before submitting: ' in page
    assert "garanti" in page.split('role="alert">')[1].split("</div>")[0]
    assert 'id="id_text">\nRendement garanti de 8 % !</textarea>' in page  # as typed
    assert re.search(rf'name="accounts" value="{world.lyon_sandbox.pk}"[^>]* checked>', page)
    assert not Post.objects.exists()
    assert LedgerEntry.objects.count() == entries


def test_save_and_submit_is_offered_on_a_draft_but_not_on_an_approved_post(
    client, world, draft, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    approved = through_review(
        world,
        django_capture_on_commit_callbacks,
        [world.lyon_sandbox],
        "Webinaire retraite jeudi.",
        publish_at=timezone.now() + timezone.timedelta(days=2),
    )
    assert approved.state == "approved"  # waits for its publish time
    client.force_login(world.alice)
    page = client.get(reverse("post_edit", args=[approved.pk])).content.decode()
    assert ">Save changes</button>" in page
    assert "Save and submit for review" not in page and 'name="submit"' not in page
    assert 'name="comment"' not in page  # no note: an edit of approved content resubmits it
    page = client.get(reverse("post_edit", args=[draft.pk])).content.decode()
    assert f"{SUBMIT_BUTTON}Save and submit for review</button>" in page
    assert 'name="comment"' in page

    response = client.post(
        reverse("post_edit", args=[draft.pk]),
        {"text": "Portes ouvertes samedi.", "accounts": [world.lyon_sandbox.pk], "submit": "1"},
        follow=True,
    )
    assert response.redirect_chain == [(reverse("post_detail", args=[draft.pk]), 302)]
    assert "Saved and submitted for review." in response.content.decode()
    assert Post.objects.get(pk=draft.pk).state == "in_review"


def test_a_refused_resubmit_from_the_edit_form_saves_nothing(client, world, changes_requested):
    """Reviewers asked for changes and only the publish time changed: the form comes back with
    the reason, and the new time is not saved either."""
    entries = LedgerEntry.objects.count()
    client.force_login(world.alice)
    response = client.post(
        reverse("post_edit", args=[changes_requested.pk]),
        {
            "text": changes_requested.current_revision.text,
            "accounts": [world.lyon_sandbox.pk],
            "publish_at": "2099-01-02T10:00",
            "submit": "1",
        },
    )
    assert response.status_code == workflow.Conflict.status == 409
    page = response.content.decode()
    assert "Reviewers asked for changes to revision 1: edit the post before submitting" in page
    assert 'value="2099-01-02T10:00"' in page  # as typed
    post = Post.objects.get(pk=changes_requested.pk)
    assert post.state == "changes_requested" and post.publish_at is None
    assert post.current_revision_id == changes_requested.current_revision_id
    assert LedgerEntry.objects.count() == entries
