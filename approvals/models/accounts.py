from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase


class Team(models.Model):
    """A branch or business unit: advisors belong to one, reviewers are granted on it."""

    name = models.CharField(max_length=120, unique=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        through="Membership",
        related_name="teams",
        blank=True,
        help_text="Advisors who draft posts for this team.",
    )

    class Meta:
        ordering = ["name"]
        permissions = [("review_team", "Can review the posts of this team")]

    def __str__(self):
        return self.name


class Membership(models.Model):
    """An advisor's team. One team per advisor keeps 'whose post is this' unambiguous."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="memberships")

    def __str__(self):
        return f"{self.user} in {self.team}"


# Direct foreign-key object permissions: no orphan rows when a team is deleted (see NOTES).
class TeamUserObjectPermission(UserObjectPermissionBase):
    content_object = models.ForeignKey(Team, on_delete=models.CASCADE)


class TeamGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Team, on_delete=models.CASCADE)


def team_id_of(user):
    """The id of the team the user drafts for, or None (reviewers and admins belong to none)."""
    return getattr(getattr(user, "membership", None), "team_id", None)


class SocialAccountQuerySet(models.QuerySet):
    def usable_by(self, user):
        """Validated accounts of the user's team that are the firm's or the user's own."""
        team_id = team_id_of(user)
        if team_id is None:
            return self.none()
        return self.usable_in(team_id, user.pk)

    def usable_in(self, team_id, user_id):
        """Validated accounts of the team that are the firm's or this user's own."""
        return self.filter(team_id=team_id, validated=True).filter(
            Q(owner__isnull=True) | Q(owner=user_id)
        )


class SocialAccount(models.Model):
    """A professional profile on a network, validated by compliance before anyone uses it."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="accounts")
    network = models.CharField(max_length=30, help_text="The connector that publishes here.")
    name = models.CharField(max_length=120, help_text="How the profile is shown to people.")
    handle = models.CharField(max_length=120, blank=True, help_text="e.g. @agence.lyon")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="social_accounts",
        help_text="The advisor whose own profile this is; empty for a firm account.",
    )
    validated = models.BooleanField(
        default=False, help_text="Compliance checked this profile; only validated ones publish."
    )
    validated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    validated_at = models.DateTimeField(null=True, blank=True)
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Connector settings; each connector says which keys it needs.",
    )

    objects = SocialAccountQuerySet.as_manager()

    class Meta:
        ordering = ["team", "name"]

    def __str__(self):
        return f"{self.name} ({self.network})"

    @property
    def connector(self):
        from approvals.connectors import get_connector

        return get_connector(self.network)

    def clean(self):
        from approvals.connectors import connector_choices, get_connector

        if self.network not in dict(connector_choices()):
            raise ValidationError({"network": f"Unknown network {self.network!r}."})
        try:
            self.settings = get_connector(self.network).clean_settings(self.settings or {})
        except ValidationError as error:
            raise ValidationError({"settings": error.messages}) from None
