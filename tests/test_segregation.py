"""Segregation of duties: every refusal, enforced by the server and mirrored by the post page.

Each refusal is checked three ways: `workflow` raises it, the page shows why instead of the
decision buttons (while the post stays readable), and the view refuses a forged form.

The posts have no publish time: the approval that completes a route releases the post in the same
transaction, so a post whose route is complete is "publishing".
"""

import html

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals import workflow
from approvals.models import Decision, LedgerEntry, Post, ReviewStep, StepClaim
from approvals.models.posts import State

from . import test_routing as routing_cases
from .test_routing import DEFAULT_RULE, LEGAL, REVIEWERS, Rule, Step, decide, install, new_post

pytestmark = pytest.mark.django_db

crew = routing_cases.crew  # the personas plus Legal (lena, leo) and Marketing (mia)

APPROVE_BUTTON = ">Approve</button>"
TAKE_BUTTON = "Take this review"


def counts():
    return (
        LedgerEntry.objects.count(),
        Decision.objects.count(),
        StepClaim.objects.count(),
        list(ReviewStep.objects.order_by("pk").values_list("state", flat=True)),
        list(Post.objects.order_by("pk").values_list("state", flat=True)),
    )


def detail(client, user, post):
    """The post page as `user` sees it: always readable by a reviewer of the team."""
    client.force_login(user)
    response = client.get(reverse("post_detail", args=[post.pk]))
    assert response.status_code == 200
    text = html.unescape(response.content.decode())
    assert Post.objects.get(pk=post.pk).current_revision.text in text
    return text


def post_decision(client, user, post, outcome="approve", step_id=None, revision_hash=None):
    client.force_login(user)
    post = Post.objects.get(pk=post.pk)
    data = {
        "outcome": outcome,
        "reason": "" if outcome == "approve" else "Because.",
        "revision_hash": revision_hash or post.current_revision.content_hash,
    }
    if step_id is not None:
        data["step_id"] = step_id
    return client.post(reverse("post_decide", args=[post.pk]), data)


def assert_refused_everywhere(client, user, post, error, message):
    """workflow.decide and workflow.claim raise it, the page says it, the views refuse it."""
    before = counts()
    with pytest.raises(error, match=message):
        decide(post, user)
    with pytest.raises(error, match=message):
        workflow.claim(post.pk, user)
    refusal = workflow.decision_refusal(Post.objects.get(pk=post.pk), user)
    assert refusal is not None and message in refusal
    page = detail(client, user, post)
    assert APPROVE_BUTTON not in page and TAKE_BUTTON not in page
    assert message in page
    response = post_decision(client, user, post)
    assert response.status_code == error.status
    assert message in html.unescape(response.content.decode())
    assert counts() == before


def test_author_never_approves_even_in_the_group_and_granted(crew, client):
    assign_perm("approvals.review_team", crew.alice, crew.lyon)
    Group.objects.get(name=REVIEWERS).user_set.add(crew.alice)
    post = workflow.submit(new_post(crew).pk, crew.alice)
    before = counts()
    with pytest.raises(workflow.NotAllowed, match="your own post"):
        decide(post, crew.alice)
    with pytest.raises(workflow.NotAllowed):
        workflow.claim(post.pk, crew.alice)
    assert workflow.decision_refusal(post, crew.alice) == "You cannot decide on your own post."
    page = detail(client, crew.alice, post)
    assert APPROVE_BUTTON not in page and TAKE_BUTTON not in page
    assert "Your decision" not in page
    response = post_decision(client, crew.alice, post)
    assert response.status_code == 403 and "your own post" in response.content.decode()
    response = client.post(reverse("post_claim", args=[post.pk]))
    assert response.status_code == 403
    assert counts() == before


def test_reviewer_not_in_the_step_group_is_refused(crew, client):
    install([Rule("Legal only", [Step(LEGAL)])])
    post = workflow.submit(new_post(crew).pk, crew.alice)
    assert_refused_everywhere(
        client,
        crew.rita,
        post,
        workflow.NotAllowed,
        "This post waits for Legal; you are not in that group.",
    )
    assert APPROVE_BUTTON in detail(client, crew.lena, post)
    decide(post, crew.lena)
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING


def test_step_id_of_a_step_not_waiting_for_the_reviewer_is_refused(crew, client):
    install([Rule("Two groups", [Step(REVIEWERS), Step(LEGAL)])])
    post = workflow.submit(new_post(crew).pk, crew.alice)
    legal = post.steps.get(group__name=LEGAL)
    before = counts()
    response = post_decision(client, crew.rita, post, step_id=legal.pk)
    assert response.status_code == 403
    assert "No step of this review is waiting for you." in response.content.decode()
    response = post_decision(client, crew.rita, post, step_id="forged")
    assert response.status_code == 400 and "reload the page" in response.content.decode()
    assert counts() == before


TWO_STAGES_SAME_GROUP = [Rule("Twice", [Step(REVIEWERS), Step(REVIEWERS, stage=2)])]
TWO_GROUPS_WITH_RITA = [Rule("Both", [Step(REVIEWERS), Step(LEGAL)])]


@pytest.mark.parametrize(
    "rules, second",
    [
        pytest.param(TWO_STAGES_SAME_GROUP, "sam", id="two stages, same group"),
        pytest.param(TWO_GROUPS_WITH_RITA, "lena", id="two groups both holding rita"),
    ],
)
def test_one_reviewer_approves_at_most_one_step_of_a_revision(crew, client, rules, second):
    Group.objects.get(name=LEGAL).user_set.add(crew.rita)
    install(rules)
    post = workflow.submit(new_post(crew).pk, crew.alice)
    first = decide(post, crew.rita)
    assert first.step.group.name == REVIEWERS and first.step.stage == 1
    open_steps = post.steps.filter(state=ReviewStep.State.ACTIVE)
    assert open_steps.count() == 1  # the other step waits for someone else
    assert_refused_everywhere(
        client,
        crew.rita,
        post,
        workflow.NotAllowed,
        "You already approved another step of this revision",
    )
    decide(post, getattr(crew, second))
    post.refresh_from_db()
    assert post.state == State.PUBLISHING
    approvers = {d.step_id: d.reviewer.username for d in Decision.objects.all()}
    assert sorted(approvers.values()) == sorted(["rita", second])


def allowing(rules):
    return [Rule(r.name, r.steps, allow_multiple=True) for r in rules]


def test_a_rule_may_let_one_reviewer_approve_both_stages(crew, client):
    install(allowing(TWO_STAGES_SAME_GROUP))
    post = workflow.submit(new_post(crew).pk, crew.alice)
    first, second = post.steps.order_by("stage")
    decide(post, crew.rita)
    page = detail(client, crew.rita, post)
    assert APPROVE_BUTTON in page and "This decision counts for" not in page
    assert f'<input type="hidden" name="step_id" value="{second.pk}">' in page
    assert post_decision(client, crew.rita, post, step_id=second.pk).status_code == 302
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING
    assert [d.step for d in Decision.objects.filter(reviewer=crew.rita)] == [first, second]


def test_a_rule_may_let_one_reviewer_approve_parallel_steps_and_she_picks_which(crew, client):
    Group.objects.get(name=LEGAL).user_set.add(crew.rita)
    install(allowing(TWO_GROUPS_WITH_RITA))
    post = workflow.submit(new_post(crew).pk, crew.alice)
    compliance, legal = post.steps.order_by("group__name")
    page = detail(client, crew.rita, post)
    assert "This decision counts for" in page
    for step in (compliance, legal):
        assert f'name="step_id" value="{step.pk}" required' in page
        assert f"Take this review for {step.group.name}" in page
    response = post_decision(client, crew.rita, post, step_id=legal.pk)
    assert response.status_code == 302
    assert Decision.objects.get().step == legal
    page = detail(client, crew.rita, post)
    assert "This decision counts for" not in page
    assert f'<input type="hidden" name="step_id" value="{compliance.pk}">' in page
    assert post_decision(client, crew.rita, post, step_id=compliance.pk).status_code == 302
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING
    assert set(Decision.objects.values_list("reviewer__username", flat=True)) == {"rita"}


def test_a_reason_missing_keeps_the_chosen_step(crew, client):
    Group.objects.get(name=LEGAL).user_set.add(crew.rita)
    install(allowing(TWO_GROUPS_WITH_RITA))
    post = workflow.submit(new_post(crew).pk, crew.alice)
    legal = post.steps.get(group__name=LEGAL)
    client.force_login(crew.rita)
    response = client.post(
        reverse("post_decide", args=[post.pk]),
        {
            "outcome": "reject",
            "reason": "",
            "revision_hash": post.current_revision.content_hash,
            "step_id": legal.pk,
        },
    )
    assert response.status_code == 400
    assert f'value="{legal.pk}" required checked' in response.content.decode()


def test_quorum_counts_distinct_people(crew, client):
    install([Rule("Four eyes", [Step(REVIEWERS, quorum=2)])])
    post = workflow.submit(new_post(crew).pk, crew.alice)
    decide(post, crew.rita)
    assert_refused_everywhere(
        client, crew.rita, post, workflow.Conflict, "You already decided on this step."
    )
    step = post.steps.get()
    assert step.state == ReviewStep.State.ACTIVE
    assert "1 of 2 approvals: rita at" in detail(client, crew.sam, post)
    decide(post, crew.sam)
    step.refresh_from_db()
    assert step.state == ReviewStep.State.APPROVED
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING
    assert sorted(step.decisions.values_list("reviewer__username", flat=True)) == ["rita", "sam"]


def test_decision_on_a_stale_revision_is_refused(crew, client):
    post = workflow.submit(new_post(crew).pk, crew.alice)
    stale = post.current_revision.content_hash
    stale_step = post.steps.get()
    detail(client, crew.rita, post)  # rita's screen shows revision 1
    decide(post, crew.sam, outcome="request_changes")
    workflow.edit_post(
        post.pk, crew.alice, text="Capital at risk.", account_ids=[crew.lyon_sandbox.pk]
    )
    workflow.submit(post.pk, crew.alice)
    before = counts()
    with pytest.raises(workflow.Conflict, match="changed since you opened it"):
        workflow.decide(post.pk, crew.rita, outcome="approve", revision_hash=stale)
    response = post_decision(client, crew.rita, post, revision_hash=stale, step_id=stale_step.pk)
    assert response.status_code == 409
    assert "changed since you opened it" in response.content.decode()
    current = Post.objects.get(pk=post.pk).current_revision.content_hash
    response = post_decision(client, crew.rita, post, revision_hash=current, step_id=stale_step.pk)
    assert response.status_code == 403  # a step of the old revision waits for no one
    assert counts() == before


# --- Claims -------------------------------------------------------------------------------------


def claimed_at(claim):
    return f"{timezone.localtime(claim.claimed_at):%H:%M}"


def test_claim_shows_who_is_on_it_and_refuses_others_the_last_approval(crew, client):
    post = workflow.submit(new_post(crew).pk, crew.alice)
    client.force_login(crew.rita)
    page = detail(client, crew.rita, post)
    assert TAKE_BUTTON in page
    step = post.steps.get()
    response = client.post(reverse("post_claim", args=[post.pk]), {"step_id": step.pk})
    assert response.status_code == 302
    claim = StepClaim.objects.get()
    assert (claim.reviewer, claim.step) == (crew.rita, step)
    entry = LedgerEntry.objects.get(event="step.claimed")
    assert entry.actor == "rita" and entry.payload["step"] == step.pk

    message = f"In review by rita since {claimed_at(claim)}"
    assert_refused_everywhere(client, crew.sam, post, workflow.Conflict, message)
    page = detail(client, crew.sam, post)  # sam can still read it
    assert "Release" not in page  # not his claim, not an admin

    page = detail(client, crew.rita, post)
    assert "You took this review at <time datetime=" in page
    assert APPROVE_BUTTON in page and TAKE_BUTTON not in page
    assert ">Release</button>" in page
    decide(post, crew.rita)
    assert not StepClaim.objects.exists()
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING


def test_claim_leaves_the_other_approvals_of_a_quorum_free(crew, client):
    install([Rule("Four eyes", [Step(REVIEWERS, quorum=2)])])
    Group.objects.get(name=REVIEWERS).user_set.add(crew.mia)
    assign_perm("approvals.review_team", crew.mia, crew.lyon)
    post = workflow.submit(new_post(crew).pk, crew.alice)
    claim = workflow.claim(post.pk, crew.rita)
    assert workflow.decision_refusal(post, crew.sam) is None
    assert APPROVE_BUTTON in detail(client, crew.sam, post)
    decide(post, crew.sam)  # rita holds one approval, one was free
    # now rita's claim holds the last approval the step needs
    assert_refused_everywhere(
        client, crew.mia, post, workflow.Conflict, f"In review by rita since {claimed_at(claim)}"
    )
    decide(post, crew.rita)
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING


@pytest.mark.parametrize("how", ["CLAIM_MINUTES set to 0", "clock moved past the claim"])
def test_claim_lapses(crew, client, settings, how):
    post = workflow.submit(new_post(crew).pk, crew.alice)
    workflow.claim(post.pk, crew.rita)
    with pytest.raises(workflow.Conflict, match="In review by rita"):
        decide(post, crew.sam)
    if how.startswith("CLAIM_MINUTES"):
        settings.REVIEWFLOW = {**settings.REVIEWFLOW, "CLAIM_MINUTES": 0}
    else:
        minutes = settings.REVIEWFLOW["CLAIM_MINUTES"] + 1
        StepClaim.objects.update(claimed_at=timezone.now() - timezone.timedelta(minutes=minutes))
    page = detail(client, crew.sam, post)
    assert "In review by rita" not in page
    assert APPROVE_BUTTON in page and TAKE_BUTTON in page
    assert workflow.decision_refusal(post, crew.sam) is None
    decide(post, crew.sam)
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING


def test_a_lapsed_claim_is_replaced_when_someone_else_takes_the_step(crew, settings):
    post = workflow.submit(new_post(crew).pk, crew.alice)
    workflow.claim(post.pk, crew.rita)
    StepClaim.objects.update(claimed_at=timezone.now() - timezone.timedelta(days=1))
    workflow.claim(post.pk, crew.sam)
    assert list(StepClaim.objects.values_list("reviewer__username", flat=True)) == ["sam"]


def test_admin_releases_a_claim_and_others_may_not(crew, client):
    post = workflow.submit(new_post(crew).pk, crew.alice)
    claim = workflow.claim(post.pk, crew.rita)
    release = reverse("post_release_claim", args=[post.pk])

    before = counts()
    client.force_login(crew.sam)
    response = client.post(release, {"claim_id": claim.pk})
    assert response.status_code == 403
    assert "Only the reviewer or a compliance admin" in response.content.decode()
    assert counts() == before

    page = detail(client, crew.carla, post)
    assert "Release rita&#x27;s claim" in page or "Release rita's claim" in page
    response = client.post(release, {"claim_id": claim.pk})
    assert response.status_code == 302
    assert not StepClaim.objects.exists()
    entry = LedgerEntry.objects.get(event="step.claim_released")
    assert entry.actor == "carla"
    assert entry.payload["reviewer"] == "rita" and entry.payload["step"] == claim.step_id
    response = client.post(release, {"claim_id": claim.pk})
    assert response.status_code == 409  # already released: a clear answer, nothing changes
    decide(post, crew.sam)
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING


def test_reviewer_releases_own_claim(crew, client):
    post = workflow.submit(new_post(crew).pk, crew.alice)
    claim = workflow.claim(post.pk, crew.rita)
    client.force_login(crew.rita)
    response = client.post(reverse("post_release_claim", args=[post.pk]), {"claim_id": claim.pk})
    assert response.status_code == 302
    assert LedgerEntry.objects.get(event="step.claim_released").actor == "rita"
    assert TAKE_BUTTON in detail(client, crew.sam, post)


def test_claim_of_a_post_no_longer_in_review_is_a_conflict(crew, client, draft):
    client.force_login(crew.rita)
    assert client.post(reverse("post_claim", args=[draft.pk])).status_code == 404  # a draft
    post = workflow.submit(draft.pk, crew.alice)
    page = detail(client, crew.rita, post)
    assert TAKE_BUTTON in page
    decide(post, crew.sam)  # approved (and so released) while rita's page was open
    before = counts()
    response = client.post(reverse("post_claim", args=[post.pk]))
    assert response.status_code == 409
    assert "This post is publishing, not in review." in response.content.decode()
    assert counts() == before


# --- Scope ------------------------------------------------------------------------------------


def test_reviewer_of_another_team_gets_404_on_every_page_and_action(crew, client):
    """tom reviews Paris and is in the step's group; a Lyon post does not exist for him."""
    post = workflow.submit(new_post(crew).pk, crew.alice)
    assert crew.tom.groups.filter(name=REVIEWERS).exists()
    claim = workflow.claim(post.pk, crew.rita)
    step = post.steps.get()
    revision_hash = post.current_revision.content_hash
    pk = post.pk
    client.force_login(crew.tom)
    requests = {
        "detail": lambda: client.get(f"/posts/{pk}/"),
        "edit": lambda: client.get(f"/posts/{pk}/edit/"),
        "edit (post)": lambda: client.post(f"/posts/{pk}/edit/", {"text": "x"}),
        "submit": lambda: client.post(f"/posts/{pk}/submit/", {"comment": "forged"}),
        "withdraw": lambda: client.post(f"/posts/{pk}/withdraw/", {"reason": "forged"}),
        "decide": lambda: client.post(
            f"/posts/{pk}/decide/",
            {"outcome": "approve", "revision_hash": revision_hash, "step_id": step.pk},
        ),
        "retry": lambda: client.post(f"/posts/{pk}/retry/"),
        "claim": lambda: client.post(f"/posts/{pk}/claim/", {"step_id": step.pk}),
        "release-claim": lambda: client.post(f"/posts/{pk}/release-claim/", {"claim_id": claim.pk}),
    }
    before = counts()
    for name, request in requests.items():
        response = request()
        assert response.status_code == 404, name
        assert post.current_revision.text not in response.content.decode(), name
    assert counts() == before
    assert Post.objects.get(pk=pk).state == State.IN_REVIEW
    assert StepClaim.objects.get() == claim
    # and the workflow refuses him too, whatever a future view does
    with pytest.raises(workflow.NotAllowed):
        decide(post, crew.tom)
    with pytest.raises(workflow.NotAllowed):
        workflow.claim(post.pk, crew.tom)
    assert DEFAULT_RULE in post.steps.get().why
