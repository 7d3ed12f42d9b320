"""Notifications by email: what happened in the review, to whom it concerns.

The workflow calls one function per event inside the transaction of the change it reports. Each
writes one Notification row per recipient (the outbox: committed with the change or not at all)
and, once those rows are committed, enqueues the mailing of the immediate ones
(`tasks.send_notifications`); rows of people who chose the daily digest wait for
`tasks.send_digests`. Only people who may see the post are told: the author, and
members of the step's groups who are granted review on the post's team (never the author).

Bursts: a campaign of a thousand posts must not send a reviewer a thousand mails. A row for
someone who already has a row from the last MAIL_BURST_SECONDS is *gathered*: the beat mails
each person what was gathered for them, in one mail, every MAIL_BURST_SECONDS
(`tasks.send_gathered_notifications`). So the first event of a burst is mailed at once and the
rest at most one period late, one mail per period.

Sending takes rows with a lease (`_claim`), mails them with no transaction open, then marks them
sent: a row is mailed at least once, and by one runner at a time while its lease holds.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import EmptyResultSet
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import Case, Exists, OuterRef, Q, Subquery, Value, When
from django.urls import reverse
from django.utils import timezone
from django.utils.text import Truncator

from .access import team_reviewers
from .models import Notification, NotificationPreference, Post, ReviewStep
from .prepared import prepared

# A row still unsent this long after it was written lost its task (broker down): sweep it.
STALLED_AFTER = timezone.timedelta(minutes=2)


def post_url(post):
    return settings.REVIEWFLOW["BASE_URL"].rstrip("/") + reverse("post_detail", args=[post.pk])


def _when(moment):
    """A time as mail shows it: the server's timezone, whatever a request activated."""
    if moment is None:
        return "no due time"
    local = timezone.localtime(moment, timezone.get_default_timezone())
    return local.strftime("%a %d %b %Y %H:%M %Z")


def _excerpt(post):
    return Truncator(post.current_revision.text).chars(200)


@prepared
def _recipients(*, user_ids, group_ids, team_id, author_id, since):
    """Who is told of an event on a post, as the rows take them (see `_rows`): the users
    `user_ids`, and the active members of the groups `group_ids` who are granted review on the
    post's team, never its author."""
    User = get_user_model()
    people = User.objects.filter(pk__in=user_ids) if user_ids else User.objects.none()
    if group_ids:
        reviewers = team_reviewers(team_id).filter(groups__in=group_ids, is_active=True)
        people = people | reviewers.exclude(pk=author_id)
    return _rows(people, since)


def _rows(users, since):
    """`users` (a queryset) as the rows take them: (pk, digest, in_burst), those with an email
    address, with their choice of digest and, given `since`, whether they have a row from then
    on (the burst's window; see the module's docstring)."""
    digest = NotificationPreference.objects.filter(
        user=OuterRef("pk"), mode=NotificationPreference.Mode.DIGEST
    )
    recipients = users.exclude(email="").annotate(digest=Exists(digest))
    if since is not None:
        # Their newest row mailed on its own, one row read backwards on notification_user_recent
        # whatever the plan. Not EXISTS(… created_at >= since): a prepared statement's generic
        # plan hashed every row of the window for it, so each event of a burst cost more.
        newest = Notification.objects.filter(user=OuterRef("pk"), digest=False)
        newest = newest.order_by("-created_at").values("created_at")[:1]
        recipients = recipients.alias(newest=Subquery(newest)).annotate(
            in_burst=Case(When(newest__gte=since, then=Value(True)), default=Value(False))
        )
    else:
        recipients = recipients.annotate(in_burst=Value(False))
    # Only what the rows take: DISTINCT over three columns, not over every column of the user.
    return recipients.values_list("pk", "digest", "in_burst").distinct().order_by("pk")


def _burst_since():
    """The start of the burst's window, or None when mail is not gathered."""
    if window := settings.REVIEWFLOW["MAIL_BURST_SECONDS"]:
        return timezone.now() - timezone.timedelta(seconds=window)
    return None


def _notify(kind, post, subject, body, *, users=(), groups=()):
    """Tell `users` and the reviewers of `groups` (see `_recipients`) of an event on `post`."""
    recipients = _recipients(
        user_ids=tuple(user.pk for user in users),
        group_ids=tuple(group.pk for group in groups if group),
        team_id=post.team_id,
        author_id=post.author_id,
        since=_burst_since(),  # None, when mail is not gathered, is a query of its own
    )
    _send(kind, post, recipients, subject, body)


def _send(kind, post, recipients, subject, body):
    """Write one row per recipient with an email address; mail the immediate ones on commit,
    except those gathered in a burst (see the module's docstring).

    `recipients`: their query, as `_rows` reads them; it becomes the SELECT of the rows' one
    INSERT.
    """
    immediate = _write(recipients, post, kind, subject, body)
    if immediate:
        transaction.on_commit(lambda: _enqueue(immediate))


# Rows from their recipients' query in one statement: each event's mail costs one round trip,
# not a read of the recipients and then an insert.
_INSERT = """
INSERT INTO {table} (user_id, post_id, kind, subject, body, digest, gathered, created_at)
SELECT pk, %s, %s, %s, %s, digest, in_burst AND NOT digest, %s FROM ({recipients}) AS r
RETURNING id, digest, gathered
"""


def _write(recipients, post, kind, subject, body):
    """Insert the rows of `recipients` (a prepared query, or a queryset's `query`, reading pk,
    digest, in_burst); return the ids to mail now."""
    try:
        sql, params = recipients.sql_with_params()
    except EmptyResultSet:  # a filter on an empty list: nobody to tell
        return []
    created_at = Notification._meta.get_field("created_at")
    now = created_at.get_db_prep_value(timezone.now(), connection)
    insert = _INSERT.format(table=Notification._meta.db_table, recipients=sql)
    with connection.cursor() as cursor:
        cursor.execute(insert, (post.pk if post else None, kind, subject, body, now, *params))
        return [pk for pk, digest, gathered in cursor.fetchall() if not (digest or gathered)]


def _enqueue(notification_ids):
    from .tasks import send, send_notifications

    send(send_notifications, notification_ids)  # else the stalled-notifications sweep sends them


# --- Events ---------------------------------------------------------------------------------------


def steps_opened(post, steps):
    """Steps became active: tell their reviewer groups. `post` is the locked post, with its
    team, author and current revision; the steps carry their group."""
    for step in steps:
        due = _when(step.due_at)
        _notify(
            Notification.Kind.REVIEW_REQUESTED,
            post,
            f"Post #{post.pk} waits for your review ({step.group.name}, due {due})",
            f"Post #{post.pk} by {post.author.get_username()} waits for a review by "
            f"{step.group.name} ({step.quorum} approval(s) needed), due {due}.\n"
            f"Why: {step.why or 'the route of this post'}.\n\n"
            f"{_excerpt(post)}\n\n"
            f"Review it: {post_url(post)}\n",
            groups=[step.group],
        )


def decision_made(post, decision):
    """A reviewer decided: tell the author. `post` as for steps_opened, already moved."""
    reviewer = decision.reviewer.get_username()
    reason = f"Reason: {decision.reason}\n" if decision.reason else ""
    _notify(
        Notification.Kind.DECISION,
        post,
        f"Post #{post.pk}: {decision.get_outcome_display().lower()} by {reviewer}",
        f"{decision.get_outcome_display()} by {reviewer} ({decision.step.group.name}) "
        f"on revision {decision.revision.number} of post #{post.pk}.\n"
        f"{reason}"
        f"The post is now {post.get_state_display().lower()}.\n\n"
        f"See it: {post_url(post)}\n",
        users=[post.author],
    )


def step_escalated(step_id):
    """A step is overdue: tell its group and the escalation group now added to it."""
    step = ReviewStep.objects.select_related(
        "post__team", "post__author", "post__current_revision", "group", "escalation_group"
    ).get(pk=step_id)
    if step.state != ReviewStep.State.ACTIVE:
        return
    post = step.post
    added = (
        f"{step.escalation_group.name} may now decide on it as well.\n"
        if step.escalation_group
        else ""
    )
    _notify(
        Notification.Kind.ESCALATION,
        post,
        f"Overdue: post #{post.pk} waits for {step.group.name} since {_when(step.due_at)}",
        f"The review of post #{post.pk} by {step.group.name} was due {_when(step.due_at)}.\n"
        f"{added}\n"
        f"{_excerpt(post)}\n\n"
        f"Review it: {post_url(post)}\n",
        groups=[step.group, step.escalation_group],
    )


def publish_at_risk(post_id, estimated_finish=None):
    """The publish time will pass before the route can finish: tell the author and reviewers."""
    post = Post.objects.select_related("team", "author", "current_revision").get(pk=post_id)
    active = list(
        post.steps.filter(
            revision_id=post.current_revision_id, state=ReviewStep.State.ACTIVE
        ).select_related("group", "escalation_group")
    )
    groups = [step.group for step in active] + [
        step.escalation_group for step in active if step.escalated_at is not None
    ]
    finish = (
        f"At the current due times the review may finish only by {_when(estimated_finish)}.\n"
        if estimated_finish
        else ""
    )
    _notify(
        Notification.Kind.PUBLISH_AT_RISK,
        post,
        f"Post #{post.pk} may miss its publish time ({_when(post.publish_at)})",
        f"Post #{post.pk} is to be published {_when(post.publish_at)}, but its review is "
        f"still open ({', '.join(step.group.name for step in active) or 'no active step'}).\n"
        f"{finish}"
        "Reviewers: decide soon. Author: move the publish time if it can wait.\n\n"
        f"See it: {post_url(post)}\n",
        users=[post.author],
        groups=groups,
    )


def reconnect_needed(account_id):
    """An account's token is expired or revoked: tell whoever publishes to it and the admins.

    The owner of a personal account, or the advisors of the team for a firm account, and the
    compliance admins (staff who may change social accounts), who reconnect it.
    """
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    from .models import Membership, SocialAccount

    account = SocialAccount.objects.select_related("team", "owner", "credential").get(pk=account_id)
    credential = getattr(account, "credential", None)
    if credential is None or credential.status != credential.Status.RECONNECT:
        return
    users = get_user_model().objects.filter(is_active=True)
    if account.owner_id:
        publishers = users.filter(pk=account.owner_id)
    else:
        team = Membership.objects.filter(team=account.team_id).values("user")
        publishers = users.filter(pk__in=team)
    perm = Permission.objects.get(
        content_type__app_label="approvals", codename="change_socialaccount"
    )
    admins = users.filter(is_staff=True).filter(
        Q(is_superuser=True) | Q(user_permissions=perm) | Q(groups__permissions=perm)
    )
    recipients = publishers | admins
    connect = settings.REVIEWFLOW["BASE_URL"].rstrip("/") + reverse(
        "admin:approvals_socialaccount_connect", args=[account.pk]
    )
    handle = f" ({account.handle})" if account.handle else ""
    _send(
        Notification.Kind.RECONNECT_NEEDED,
        None,
        _rows(recipients, _burst_since()).query,
        f"Reconnect needed: {account.name} on {account.network}",
        f"{account.name}{handle}, a {account.network} account of {account.team.name}, cannot "
        f"publish until it is reconnected: {credential.status_detail or 'the token was refused'}\n"
        "Posts released to it fail meanwhile.\n\n"
        f"A compliance admin reconnects it here: {connect}\n",
    )


def approval_expiring(post_id):
    """An approved post will not be released before its approval expires: tell the author."""
    post = Post.objects.select_related("author", "current_revision").get(pk=post_id)
    if post.approval_expires_at is None:  # the approval was voided since
        return
    when = f"its publish time ({_when(post.publish_at)})" if post.publish_at else "it is released"
    _notify(
        Notification.Kind.APPROVAL_EXPIRING,
        post,
        f"Post #{post.pk}: the approval expires {_when(post.approval_expires_at)}",
        f"The approval of post #{post.pk} expires {_when(post.approval_expires_at)}, before "
        f"{when}. An expired post is not published: it must be reviewed again.\n"
        "Move the publish time earlier if it can go out sooner.\n\n"
        f"{_excerpt(post)}\n\n"
        f"See it: {post_url(post)}\n",
        users=[post.author],
    )


# --- Sending --------------------------------------------------------------------------------------


# How long a runner holds the rows it claimed (`Notification.sending_until`): long enough for a
# slow SMTP batch; past it the runner is taken for dead and a sweep may claim its rows again. A
# runner starts no mail in the second half of its lease, so two never mail one row at once.
SENDING_LEASE = timezone.timedelta(minutes=10)


def _claim(rows, now, until):
    """Lease the free rows of `rows` (a queryset) until `until` and read them: one statement.

    Free: unsent, and held by no one or by a lease expired at `now`. One UPDATE ... RETURNING
    (the ORM has none; PostgreSQL, SQLite >= 3.35) commits at once, so no transaction stays open
    while mailing. On PostgreSQL the subquery skips rows another claim is locking and re-checks
    the lease of a row changed under it; SQLite runs one writer at a time. The rows come back
    oldest first, each with `email`, its user's address now.
    """
    free = rows.filter(
        Q(sending_until__isnull=True) | Q(sending_until__lte=now), sent_at__isnull=True
    )
    try:
        select, params = free.order_by().values("pk").query.sql_with_params()
    except EmptyResultSet:  # no ids
        return []
    if connection.features.has_select_for_update_skip_locked:
        select += " FOR UPDATE SKIP LOCKED"
    quote = connection.ops.quote_name
    User = get_user_model()

    def column(model, name):
        return f"{quote(model._meta.db_table)}.{quote(model._meta.get_field(name).column)}"

    lease = Notification._meta.get_field("sending_until")
    claimed = Notification.objects.raw(
        f"UPDATE {quote(Notification._meta.db_table)} SET {quote(lease.column)} = %s "
        f"WHERE {column(Notification, 'id')} IN ({select}) RETURNING "
        + ", ".join(column(Notification, name) for name in ("id", "subject", "body", "created_at"))
        + f", (SELECT {column(User, 'email')} FROM {quote(User._meta.db_table)} "
        f"WHERE {column(User, User._meta.pk.name)} = {column(Notification, 'user')}) AS email",
        [lease.get_db_prep_value(until, connection), *params],
    )
    return sorted(claimed, key=lambda row: (row.created_at, row.pk))


def _finish(claimed, sent, until):
    """One UPDATE: the `sent` rows are marked sent, all `claimed` ones leave our lease (the
    others go back to the sweep). A row another runner claimed since our lease expired is its."""
    if claimed:
        Notification.objects.filter(pk__in=[row.pk for row in claimed], sending_until=until).update(
            sending_until=None,
            # NULL (still unsent) for the rows not in `sent`
            sent_at=Case(When(pk__in=[row.pk for row in sent], then=Value(timezone.now()))),
        )


def send_immediate(notification_ids=None):
    """Mail immediate rows, one mail each; without ids, the ones whose task was lost.

    Two statements: the claim that reads the rows, then the mark, after the mails. A failed
    send leaves that row and the ones after it unsent, for the sweep, and is raised once the
    rows mailed so far are marked. A row whose user has no email left is marked without mail.
    """
    now = timezone.now()
    rows = Notification.objects.filter(digest=False, gathered=False)
    if notification_ids is None:
        rows = rows.filter(created_at__lte=now - STALLED_AFTER)
    else:
        rows = rows.filter(pk__in=notification_ids)
    until = now + SENDING_LEASE
    claimed = _claim(rows, now, until)
    sent = []
    try:
        for row in claimed:
            if timezone.now() >= now + SENDING_LEASE / 2:  # the rest is left to the sweep
                break
            if row.email:
                send_mail(row.subject, row.body, None, [row.email])
            sent.append(row)
    finally:
        _finish(claimed, sent, until)
    return sum(1 for row in sent if row.email)


def send_digests():
    """One mail per person listing all their unsent digest rows; returns how many were sent."""
    return _send_per_person(Notification.objects.filter(digest=True), "digest")


def send_gathered():
    """One mail per person with the rows a burst gathered for them; returns how many were sent."""
    return _send_per_person(Notification.objects.filter(gathered=True), "gathered")


def _send_per_person(rows, what):
    # order_by(): the model's ordering would put created_at in the DISTINCT, one id per row.
    unsent = rows.filter(sent_at__isnull=True).order_by()
    user_ids = unsent.values_list("user_id", flat=True).distinct()
    return sum(_send_together(rows.filter(user_id=user_id), what) for user_id in list(user_ids))


# A mail that gathers many rows (a day's digest, a campaign's burst) lists this many, oldest
# first, and counts the rest: a thousand items is a mail nobody reads.
LISTED_AT_MOST = 50


def _send_together(rows, what):
    """Claim, mail and mark one person's unsent `rows` in one mail, as `send_immediate` does
    (without an email address left, they are marked without mail). A single gathered row is
    mailed as it was written."""
    now = timezone.now()
    until = now + SENDING_LEASE
    rows = _claim(rows, now, until)
    if not rows:
        return 0
    email, sent = rows[0].email, []
    try:
        if email and what == "gathered" and len(rows) == 1:
            send_mail(rows[0].subject, rows[0].body, None, [email])
        elif email:
            items = "\n\n".join(
                f"{index}. {row.subject}\n   {_when(row.created_at)}\n"
                + "\n".join(f"   {line}" if line else "" for line in row.body.strip().splitlines())
                for index, row in enumerate(rows[:LISTED_AT_MOST], start=1)
            )
            if len(rows) > LISTED_AT_MOST:
                home = settings.REVIEWFLOW["BASE_URL"].rstrip("/") + reverse("home")
                items += (
                    f"\n\n… and {len(rows) - LISTED_AT_MOST} more, not listed here: "
                    f"they are all in ReviewFlow, {home}"
                )
            if what == "digest":
                plural = "s" if len(rows) > 1 else ""
                subject = f"ReviewFlow digest: {len(rows)} notification{plural}"
                since = "since the last digest"
            else:
                subject = f"ReviewFlow: {len(rows)} notifications"
                since = "in the last moments, gathered in one mail"
            send_mail(
                subject,
                f"What happened in your reviews {since}:\n\n{items}\n\n"
                f"Change how you are notified: "
                f"{settings.REVIEWFLOW['BASE_URL'].rstrip('/')}{reverse('notification_preferences')}\n",
                None,
                [email],
            )
        sent = rows
    finally:
        _finish(rows, sent, until)
    return 1 if email else 0
