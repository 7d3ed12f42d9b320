"""Who may see which post: written once, used by every view."""

from django.db.models import F, Q
from django.http import Http404
from guardian.shortcuts import get_objects_for_user

from .models import Post, Team
from .models.posts import State


def reviewable_teams(user):
    return get_objects_for_user(
        user, "approvals.review_team", klass=Team, accept_global_perms=False
    )


def visible_posts(user):
    """The author's own posts, submitted posts of teams the user reviews, or all for overseers."""
    if user.has_perm("approvals.oversee_posts"):
        return Post.objects.all()
    return Post.objects.filter(
        Q(author=user) | (Q(team__in=reviewable_teams(user)) & ~Q(state=State.DRAFT))
    )


def post_for_user(user, pk):
    """The post, or 404 (never 403: a forged id must not tell whether the post exists)."""
    try:
        return visible_posts(user).select_related("current_revision", "team", "author").get(pk=pk)
    except (Post.DoesNotExist, ValueError):
        raise Http404("No such post") from None


def review_queue(user):
    """Posts waiting for this reviewer: their teams, not their own, soonest due then oldest."""
    return (
        Post.objects.filter(state=State.IN_REVIEW, team__in=reviewable_teams(user))
        .exclude(author=user)
        .select_related("current_revision", "team", "author")
        .order_by(F("publish_at").asc(nulls_last=True), "submitted_at")
    )
