from collections import defaultdict

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from approvals import config, media, policy, workflow
from approvals.access import post_for_user, review_queue
from approvals.connectors import get_connector
from approvals.diff import word_diff
from approvals.forms import (
    ClaimForm,
    CommentForm,
    DecisionForm,
    PostForm,
    ReleaseClaimForm,
    WithdrawForm,
    read_kept_image,
)
from approvals.highlight import checks_context
from approvals.models import LedgerEntry, Post, Publication, RevisionView
from approvals.models.posts import State, may_decide, may_retry
from approvals.policy.network import network_length
from approvals.text import clean_text

from .common import done, refused
from .route import route_view


def home(request):
    posts = (
        Post.objects.filter(author=request.user)
        .select_related("current_revision")
        .order_by("-updated_at")
    )
    by_state = defaultdict(list)
    for post in posts:
        by_state[post.state].append(post)
    groups = [(label, by_state[value]) for value, label in State.choices if by_state[value]]
    return render(
        request,
        "approvals/home.html",
        {
            "groups": groups,
            "is_advisor": hasattr(request.user, "membership"),
            "queue_count": review_queue(request.user).count(),
        },
    )


def _save_post(request, post=None):
    """The compose form: save the draft or the changes; with its "submit" button, also send the
    post to review, all or nothing (a refusal shows the form again, as typed)."""
    form = PostForm(
        request.POST or None, request.FILES or None, user=request.user, initial=_initial(post)
    )
    submit = "submit" in request.POST
    status = 400 if request.method == "POST" else 200
    if request.method == "POST" and form.is_valid():
        try:
            if post is None:
                post = workflow.create_post(
                    request.user,
                    **form.workflow_kwargs,
                    image=form.image_choice(None),
                    submit=submit,
                    comment=form.cleaned_data["comment"],
                )
                return done(request, "Submitted for review." if submit else "Draft saved.", post)
            was_approved = post.state == State.APPROVED
            post = workflow.edit_post(
                post.pk,
                request.user,
                **form.workflow_kwargs,
                image=form.image_choice(workflow.KEEP),
                submit=submit,
                comment=form.cleaned_data["comment"],
            )
            if was_approved and post.state == State.IN_REVIEW:
                message = "Saved. The approval is void: the post is back in review."
                return done(request, message, post)
            return done(
                request, "Saved and submitted for review." if submit else "Changes saved.", post
            )
        except workflow.ContentError as error:
            for field, message in error.errors.items():
                form.add_error(field if field in form.fields else None, message)
        except workflow.WorkflowError as error:
            if not submit or isinstance(error, workflow.NotAllowed):
                return refused(request, error, post)
            form.add_error(None, error.message)  # could not go to review: nothing was saved
            status = error.status
    if request.method == "POST":
        form.keep_image()  # the browser will not send the chosen file again
    return render(request, "approvals/post_form.html", {"form": form, "post": post}, status=status)


def _initial(post):
    if post is None:
        return {}
    revision = post.current_revision
    return {
        "text": revision.text,
        "link": revision.link,
        "accounts": list(revision.accounts.all()),
        "tags": list(revision.tags.all()),
        "publish_at": post.publish_at,
    }


def post_create(request):
    if not hasattr(request.user, "membership"):
        error = workflow.NotAllowed("Only advisors who belong to a team can draft posts.")
        return refused(request, error)
    return _save_post(request)


def post_edit(request, pk):
    post = post_for_user(request.user, pk)
    if post.author_id != request.user.pk:
        return refused(request, workflow.NotAllowed("Only the author can edit this post."), post)
    if not post.is_editable:
        return refused(request, workflow.not_editable(post), post)
    return _save_post(request, post)


def preview(request):
    """Live preview per target account, with the characters left on each network."""
    with config.using():  # the lengths and the checks read the configuration's version once
        return _preview(request)


def _preview(request):
    form = PostForm(request.POST, user=request.user)
    form.is_valid()
    text = clean_text(request.POST.get("text", ""))
    link = request.POST.get("link", "").strip()
    accounts = form.cleaned_data.get("accounts") or []
    previews = []
    for account in accounts:
        connector = get_connector(account.network)
        measured = network_length(account.network, text, link)  # the NetworkRule, if any
        used, limit = measured or (connector.count(text, link), connector.max_length)
        previews.append(
            {
                "account": account,
                "network": connector.label,
                "used": used,
                "limit": limit,
                "left": None if limit is None else limit - used,
            }
        )
    return render(
        request,
        "approvals/partials/preview.html",
        {
            "text": text,
            "link": link,
            "previews": previews,
            "checks": _live_checks(
                request.user, form, text, form.cleaned_data.get("link") or link, accounts
            ),
        },
    )


def _live_checks(user, form, text, link, accounts):
    """The automated checks on what is being typed (None while there is no text to check)."""
    if not text.strip():
        return None
    membership = getattr(user, "membership", None)
    findings = policy.check(
        policy.subject_for(
            text=text,
            link=link,
            accounts=accounts,
            team=membership.team if membership is not None else None,
            tags=form.cleaned_data.get("tags") or [],
        )
    )
    return checks_context(text, findings, frozen=False, editor=True)


def post_detail(request, pk):
    return _render_detail(request, post_for_user(request.user, pk))


def _render_detail(request, post, decision_form=None, status=200):
    user = request.user
    revision = post.current_revision
    can_decide = post.state == State.IN_REVIEW and may_decide(post, user)
    timeline = list(LedgerEntry.objects.filter(post_id=post.pk).order_by("seq"))
    decisions = list(
        post.decisions.select_related("reviewer", "revision").order_by("created_at", "pk")
    )
    route = route_view(post, revision, timeline, decisions)
    # Reviewers asked for changes to this very revision: the server refuses to resubmit it.
    needs_edit_to_resubmit = post.state == State.CHANGES_REQUESTED and bool(route.steps)
    findings, frozen = _revision_findings(post, revision, needs_edit_to_resubmit)
    context = {
        "post": post,
        "revision": revision,
        "accounts": revision.accounts.all(),
        "tags": revision.tags.all(),
        "is_author": post.author_id == user.pk,
        "can_decide": can_decide,
        **_publishing_context(post, user),
        "decisions": decisions,
        "timeline": timeline,
        "route": route,
        "can_release_any_claim": user.has_perm("approvals.oversee_posts"),
        "needs_edit_to_resubmit": needs_edit_to_resubmit,
        "checks": checks_context(revision.text, findings, frozen=frozen),
        "decision_form": decision_form
        or DecisionForm(initial={"revision_hash": revision.content_hash}),
        "comment_form": CommentForm(),
        "withdraw_form": WithdrawForm(),
    }
    if can_decide:
        context.update(_decision_context(post, user, route, decision_form))
        context["diff"] = _diff_since_last_seen(post, user, decisions)
        # One upsert (update_or_create took a transaction, a locking read and a savepoint).
        RevisionView.objects.bulk_create(
            [RevisionView(user=user, post=post, revision=revision)],
            update_conflicts=True,
            unique_fields=["user", "post"],
            update_fields=["revision", "seen_at"],
        )
    return render(request, "approvals/post_detail.html", context, status=status)


RETRACTABLE_STATES = (State.PUBLISHED, State.PARTIALLY_PUBLISHED, State.FAILED)


def _publishing_context(post, user):
    """The publications table and the buttons the workflow would accept from this user."""
    publications = list(post.publications.select_related("account", "revision"))
    allowed = may_retry(post, user)  # the author or a compliance admin
    retract_failed = any(p.state == Publication.State.RETRACT_FAILED for p in publications)
    return {
        "publications": publications,
        "can_retry": allowed and post.state in (State.FAILED, State.PARTIALLY_PUBLISHED),
        "can_retract": allowed and post.state in RETRACTABLE_STATES,
        "can_retry_retract": allowed and post.state == State.RETRACTED and retract_failed,
        "max_attempts": settings.REVIEWFLOW["DELIVERY_MAX_ATTEMPTS"],
    }


def _revision_findings(post, revision, submitted):
    """(findings, frozen?): the findings frozen with the revision when it was submitted, or,
    for a revision not submitted yet (a draft, or an edit after changes were requested), the
    checks run now. `submitted`: reviewers already have this revision (it has review steps)."""
    frozen = list(revision.findings.all())
    if frozen or submitted or post.state not in (State.DRAFT, State.CHANGES_REQUESTED):
        return frozen, True
    return policy.check_revision(revision), False


def _decision_context(post, user, route, decision_form):
    """The steps this reviewer may decide on, their own claims, or why they cannot decide.

    The workflow says it (`decision_options`, the checks `decide` and `claim` make), so the page
    shows the buttons exactly when the server would accept the decision.
    """
    steps, refusal = workflow.decision_options(post, user)
    choices = []
    for step in steps:
        view = route.step(step.pk)
        mine = [c for c in view.live_claims if c.reviewer_id == user.pk] if view else []
        choices.append({"step": step, "my_claim": mine[0] if mine else None})
    selected = decision_form.data.get("step_id") if decision_form is not None else None
    if not any(str(choice["step"].pk) == selected for choice in choices) and choices:
        selected = str(choices[0]["step"].pk)
    return {
        "decidable": choices,
        "selected_step_id": selected,
        "decision_refusal": refusal,
    }


def _diff_since_last_seen(post, user, decisions):
    """Against the revision this reviewer last saw, else the one last decided on.
    `decisions`: the post's, oldest first, with their revision."""
    seen = RevisionView.objects.filter(user=user, post=post).select_related("revision").first()
    base = seen.revision if seen else None
    if base is None and decisions:
        base = decisions[-1].revision
    if base is None or base.pk == post.current_revision_id:
        return None
    current = post.current_revision
    return {
        "base": base,
        "text": word_diff(base.text, current.text),
        "link_changed": base.link != current.link,
        "old_link": base.link,
    }


@require_POST
def post_submit(request, pk):
    post = post_for_user(request.user, pk)
    form = CommentForm(request.POST)
    if not form.is_valid():
        return refused(request, workflow.WorkflowError(" ".join(form.errors["comment"])), post)
    try:
        workflow.submit(post.pk, request.user, comment=form.cleaned_data["comment"])
    except workflow.WorkflowError as error:
        return refused(request, error, post)
    return done(request, "Submitted for review.", post)


@require_POST
def post_withdraw(request, pk):
    post = post_for_user(request.user, pk)
    form = WithdrawForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        workflow.withdraw(post.pk, request.user, reason=reason)
    except workflow.WorkflowError as error:
        return refused(request, error, post)
    return done(request, "Post withdrawn.", post)


@require_POST
def post_retry(request, pk):
    post = post_for_user(request.user, pk)
    try:
        workflow.retry(post.pk, request.user)
    except workflow.WorkflowError as error:
        return refused(request, error, post)
    return done(request, "Publishing again.", post)


@require_POST
def post_retract(request, pk):
    """Take a post down from every network (or try again the removals that failed)."""
    post = post_for_user(request.user, pk)
    try:
        if post.state == State.RETRACTED:
            workflow.retry_retract(post.pk, request.user)
            return done(request, "Trying the removals that failed again.", post)
        workflow.retract(post.pk, request.user, reason=request.POST.get("reason", "")[:2000])
    except workflow.WorkflowError as error:
        return refused(request, error, post)
    return done(request, "Retracted: the post is being removed from every network.", post)


@require_POST
def post_decide(request, pk):
    post = post_for_user(request.user, pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        if {"revision_hash", "outcome", "step_id"} & set(form.errors):
            error = workflow.WorkflowError("This form is incomplete; reload the page.")
            return refused(request, error, post)
        return _detail_with_decision_errors(request, post, form)
    try:
        decision = workflow.decide(
            post.pk,
            request.user,
            outcome=form.cleaned_data["outcome"],
            reason=form.cleaned_data["reason"],
            revision_hash=form.cleaned_data["revision_hash"],
            step_id=form.cleaned_data["step_id"],
        )
    except workflow.ContentError as error:
        for field, message in error.errors.items():
            form.add_error(field if field in form.fields else None, message)
        return _detail_with_decision_errors(request, post, form)
    except workflow.WorkflowError as error:
        return refused(request, error, post)
    return done(request, f"{decision.get_outcome_display()}.", post)


def _detail_with_decision_errors(request, post, form):
    return _render_detail(request, post, decision_form=form, status=400)


@require_POST
def post_claim(request, pk):
    """Take the review of a step, so other reviewers see who is on it."""
    post = post_for_user(request.user, pk)
    form = ClaimForm(request.POST)
    if not form.is_valid():
        error = workflow.WorkflowError("This form is incomplete; reload the page.")
        return refused(request, error, post)
    try:
        claim = workflow.claim(post.pk, request.user, step_id=form.cleaned_data["step_id"])
    except workflow.WorkflowError as error:
        return refused(request, error, post)
    until = timezone.localtime(claim.expires_at)
    message = f"You took this review; other reviewers see it until {until:%H:%M}."
    return done(request, message, post)


@require_POST
def post_release_claim(request, pk):
    """The reviewer gives a step back, or a compliance admin releases someone's claim."""
    post = post_for_user(request.user, pk)
    form = ReleaseClaimForm(request.POST)
    if not form.is_valid():
        error = workflow.WorkflowError("This form is incomplete; reload the page.")
        return refused(request, error, post)
    try:
        workflow.release_claim(post.pk, request.user, claim_id=form.cleaned_data["claim_id"])
    except workflow.WorkflowError as error:
        return refused(request, error, post)
    return done(request, "Claim released: the step is free for every reviewer.", post)


def revision_image(request, pk, number):
    """A revision's image, for people who may see the post (never a public media URL)."""
    post = post_for_user(request.user, pk)
    revision = get_object_or_404(post.revisions, number=number)
    if not revision.image:
        raise Http404("No image")
    return _private_image(revision.image.open("rb"))


def kept_image(request, token):
    """The image kept from a refused try of the compose form, for its author only."""
    kept = read_kept_image(token, request.user)
    if kept is None:
        raise Http404("No image")
    return _private_image(default_storage.open(kept["name"], "rb"))


def _private_image(file):
    head = file.read(16)
    file.seek(0)
    response = FileResponse(file, content_type=media.mime_type(head))
    response["Content-Disposition"] = "inline"
    response["Cache-Control"] = "private, max-age=3600"
    return response
