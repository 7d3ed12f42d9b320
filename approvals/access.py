"""Who may see which post: written once, used by every view; and the request's user, read with
their team (`UserWithTeamBackend`)."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission
from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from .models import (
    Decision,
    Post,
    ReviewStep,
    RevisionFinding,
    StepClaim,
    Team,
    TeamGroupObjectPermission,
    TeamUserObjectPermission,
)
from .models.policy import Severity
from .models.posts import State, knows_review_grant, review_grant
from .prepared import prepared


class UserWithTeamBackend(ModelBackend):
    """Django's own backend, but the request's user comes with their membership and its team in
    the same query: nearly every page asks whether the user is an advisor, and composing reads
    the team. For a reviewer or an admin the join finds no membership and that is cached too."""

    def get_user(self, user_id):
        User = get_user_model()
        try:
            user = User._default_manager.select_related("membership__team").get(pk=user_id)
        except User.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None


def user_groups(user):
    """The user's group ids, as a subquery."""
    return get_user_model().groups.through.objects.filter(user_id=user.pk).values("group_id")


def step_has_claims():
    """Whether the step of the outer row (OuterRef("pk")) has claims, as an annotation named
    `has_claims`, which `read_claims` and `claims_of` read."""
    return Exists(StepClaim.objects.filter(step=OuterRef("pk")))


def read_claims(steps):
    """Read the claims of those `steps` that have some (`has_claims`), oldest first, with their
    reviewer: one query, and none when no step is claimed (most of them)."""
    prefetch_related_objects(
        [step for step in steps if step.has_claims],
        Prefetch(
            "claims",
            queryset=StepClaim.objects.select_related("reviewer").order_by("claimed_at", "pk"),
        ),
    )


def claims_of(step):
    """The step's claims, oldest first, as `read_claims` read them."""
    return list(step.claims.all()) if step.has_claims else []


def approvals_on_step():
    """How many approvals the step of the outer row (OuterRef("pk")) has, as a subquery."""
    return (
        Decision.objects.filter(step=OuterRef("pk"), outcome=Decision.Outcome.APPROVE)
        .order_by()
        .values("step")
        .annotate(n=Count("pk"))
        .values("n")
    )


def reviewable_teams(user):
    """The teams the user is granted `approvals.review_team` on, directly or through a group.

    The same teams as guardian's `get_objects_for_user(user, "approvals.review_team",
    klass=Team, accept_global_perms=False)` (a test holds them equal): a superuser gets every
    team, anyone else the teams of their object permissions (guardian's direct foreign-key
    tables). A lazy queryset, so that in a filter it is a subquery, never a list in Python.
    Written as one UNION of the two grant tables because guardian's `id IN (...) OR id IN (...)`
    makes PostgreSQL guess three teams in four: on 100,000 posts that guess sent the review
    queue to nested loops and JIT compilation, twice as slow (see benchmarks/queue.py).
    """
    if user.is_superuser:
        return Team.objects.all()
    permission = _review_permission()
    direct = TeamUserObjectPermission.objects.filter(
        user_id=user.pk, permission__in=permission
    ).values("content_object_id")
    through_groups = TeamGroupObjectPermission.objects.filter(
        group_id__in=user_groups(user), permission__in=permission
    ).values("content_object_id")
    return Team.objects.filter(pk__in=direct.union(through_groups))


def team_reviewers(team_id):
    """The users granted `approvals.review_team` on this team, directly or through a group, and
    the superusers: guardian's `get_users_with_perms(team, with_superusers=True,
    only_with_perms_in=["review_team"])` (a test holds them equal), as one lazy queryset over
    the grant tables (guardian's is several times slower to build, for every notification)."""
    permission = _review_permission()
    direct = TeamUserObjectPermission.objects.filter(
        content_object_id=team_id, permission__in=permission
    ).values("user_id")
    granted_groups = TeamGroupObjectPermission.objects.filter(
        content_object_id=team_id, permission__in=permission
    ).values("group_id")
    User = get_user_model()
    in_granted_group = User.groups.through.objects.filter(
        user_id=OuterRef("pk"), group_id__in=granted_groups
    )
    return User.objects.filter(Q(is_superuser=True) | Q(pk__in=direct) | Exists(in_granted_group))


def _review_permission():
    return Permission.objects.filter(
        content_type__app_label="approvals", codename="review_team"
    ).values("pk")


def _visible(user, oversee):
    """The author's own posts, submitted posts of teams the user reviews, or all for overseers
    (`oversee`: the user has approvals.oversee_posts)."""
    if oversee:
        return Post.objects.all()
    return Post.objects.filter(
        Q(author_id=user.pk) | (Q(team__in=reviewable_teams(user)) & ~Q(state=State.DRAFT))
    )


@prepared
def _visible_post(oversee, superuser, *, user_id, pk):
    """The post if the user sees it, with what its page reads, and the user's review grant."""
    user = get_user_model()(pk=user_id, is_superuser=superuser)  # all that these read of them
    return (
        _visible(user, oversee)
        .select_related("current_revision", "team", "author")
        .annotate(review_granted=review_grant(user))  # the page asks may_decide
        .filter(pk=pk)
    )


def post_for_user(user, pk):
    """The post, or 404 (never 403: a forged id must not tell whether the post exists)."""
    oversee = user.has_perm("approvals.oversee_posts")
    try:
        query = _visible_post(oversee, user.is_superuser, user_id=user.pk, pk=int(pk))
        post = query.get()
    except (Post.DoesNotExist, ValueError):
        raise Http404("No such post") from None
    knows_review_grant(post, user, post.review_granted)
    return post


def waiting_steps(user):
    """The review steps waiting for this reviewer, most urgent first: one query, no details.

    A row is an active step of a post's current revision, on a post in review of a team the user
    reviews (guardian grant), not authored by the user, that the user may decide: the step's group
    is one of theirs, or the step was escalated to one of their groups; and that
    `workflow._pick_step` would not refuse: the user has not decided this step, and has not
    approved another step of the revision unless this step allows it. Grants, groups and
    decisions are subqueries, so the query is the same whatever the number of posts.

    One row per step, not per post: each step is its own gate (group, quorum, due time, claims),
    so the queue labels each row with its group, and a post that needs two of the reviewer's
    groups shows twice until they approve one of them; then the other row disappears, because
    segregation of duties would refuse it. This keeps the query portable (no DISTINCT ON, no
    window) and the pagination exact.

    Order: due time ascending with steps without one last, which puts every overdue step
    (due_at <= now) first, most overdue first, then the ones due soonest; then publish time
    (none last), then submission time, then the step id so that pages are stable.
    """
    my_groups = user_groups(user)
    my_decisions = Decision.objects.filter(reviewer_id=user.pk)
    return (
        ReviewStep.objects.filter(
            state=ReviewStep.State.ACTIVE,
            revision_id=F("post__current_revision_id"),
            post__state=State.IN_REVIEW,
            post__team__in=reviewable_teams(user).values("pk"),
        )
        .exclude(post__author_id=user.pk)
        .filter(
            Q(group__in=my_groups) | Q(escalated_at__isnull=False, escalation_group__in=my_groups)
        )
        .filter(~Exists(my_decisions.filter(step=OuterRef("pk"))))
        .filter(
            Q(allow_multiple_steps_per_reviewer=True)
            | ~Exists(
                my_decisions.filter(revision=OuterRef("revision"), outcome=Decision.Outcome.APPROVE)
            )
        )
        .order_by(
            F("due_at").asc(nulls_last=True),
            F("post__publish_at").asc(nulls_last=True),
            F("post__submitted_at").asc(nulls_last=True),
            "pk",
        )
    )


def _findings_count(severity):
    """How many findings of `severity` were frozen with the post's current revision: a
    subquery in the rows' query, so counting adds no query."""
    found = (
        RevisionFinding.objects.filter(
            revision_id=OuterRef("post__current_revision_id"), severity=severity
        )
        .order_by()
        .values("revision")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(found, output_field=IntegerField()), 0)


def with_queue_details(steps, now=None):
    """What a queue row shows, loaded with the rows: the post, its author, team and current
    revision, the groups, `approvals` (approvals counted so far on the step), `findings_block`,
    `findings_warn` and `findings_info` (the current revision's findings by severity) and
    `live_claims` (claims younger than CLAIM_MINUTES at `now`, oldest first, with their
    reviewer; one more query, for the rows fetched only)."""
    now = now or timezone.now()
    claim_cutoff = now - timezone.timedelta(minutes=settings.REVIEWFLOW["CLAIM_MINUTES"])
    approvals = approvals_on_step()
    return (
        steps.select_related(
            "post",
            "post__author",
            "post__team",
            "post__current_revision",
            "group",
            "escalation_group",
        )
        .annotate(
            approvals=Coalesce(Subquery(approvals, output_field=IntegerField()), 0),
            findings_block=_findings_count(Severity.BLOCK),
            findings_warn=_findings_count(Severity.WARN),
            findings_info=_findings_count(Severity.INFO),
        )
        .prefetch_related(
            Prefetch(
                "claims",
                queryset=StepClaim.objects.filter(claimed_at__gt=claim_cutoff)
                .select_related("reviewer")
                .order_by("claimed_at", "pk"),
                to_attr="live_claims",
            )
        )
    )


def review_queue(user, now=None):
    """The review steps waiting for this reviewer with everything a queue row shows: ONE query
    for the rows (see `waiting_steps`), one for their live claims (see `with_queue_details`).

    The queue page does not page through this queryset: it pages through the bare ids of
    `waiting_steps` and loads the details of the 50 rows shown only (see views/reviews.py).
    """
    return with_queue_details(waiting_steps(user), now)
