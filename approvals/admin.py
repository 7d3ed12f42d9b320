from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.forms.models import model_to_dict
from django.shortcuts import get_object_or_404
from django.utils import timezone
from guardian.admin import GuardedModelAdmin
from guardian.shortcuts import get_group_perms, get_user_perms

from . import ledger
from .connectors import connector_choices
from .models import LedgerEntry, Post, Publication, SocialAccount, Team
from .models.accounts import Membership


def _snapshot(obj):
    data = model_to_dict(obj)
    return {
        key: (value.pk if hasattr(value, "pk") else value)
        for key, value in data.items()
        if not isinstance(value, list | tuple | set) and key != "settings"
    }


class LedgeredAdmin(admin.ModelAdmin):
    """Every admin change of configuration is a ledger entry in the same transaction."""

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            before = _snapshot(type(obj).objects.get(pk=obj.pk)) if change else None
            super().save_model(request, obj, form, change)
            ledger.append(
                f"admin.{obj._meta.model_name}.{'changed' if change else 'added'}",
                actor=request.user,
                object_id=obj.pk,
                object=str(obj),
                before=before,
                after=_snapshot(obj),
            )

    def delete_model(self, request, obj):
        with transaction.atomic():
            ledger.append(
                f"admin.{obj._meta.model_name}.deleted",
                actor=request.user,
                object_id=obj.pk,
                object=str(obj),
                before=_snapshot(obj),
            )
            super().delete_model(request, obj)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    verbose_name = "advisor"
    verbose_name_plural = "advisors (members of this team)"


@admin.register(Team)
class TeamAdmin(LedgeredAdmin, GuardedModelAdmin):
    """Reviewer grants: 'Object permissions' on a team, permission 'Can review the posts...'."""

    list_display = ["name"]
    search_fields = ["name"]
    inlines = [MembershipInline]

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        for membership in formset.new_objects + [obj for obj, _ in formset.changed_objects]:
            ledger.append(
                "admin.membership.saved",
                actor=request.user,
                team=membership.team_id,
                user=membership.user.get_username(),
            )
        for membership in formset.deleted_objects:
            ledger.append(
                "admin.membership.deleted",
                actor=request.user,
                team=membership.team_id,
                user=membership.user.get_username(),
            )

    def obj_perms_manage_user_view(self, request, object_pk, user_id):
        user = get_object_or_404(get_user_model(), pk=user_id)
        return self._logged_grant(
            request,
            object_pk,
            "user",
            user.get_username(),
            lambda team: get_user_perms(user, team),
            lambda: super(TeamAdmin, self).obj_perms_manage_user_view(request, object_pk, user_id),
        )

    def obj_perms_manage_group_view(self, request, object_pk, group_id):
        group = get_object_or_404(Group, pk=group_id)
        return self._logged_grant(
            request,
            object_pk,
            "group",
            group.name,
            lambda team: get_group_perms(group, team),
            lambda: super(TeamAdmin, self).obj_perms_manage_group_view(
                request, object_pk, group_id
            ),
        )

    def _logged_grant(self, request, object_pk, kind, name, perms_of, view):
        """Reviewer grants are compliance configuration: each change is a ledger entry."""
        team = get_object_or_404(Team, pk=object_pk)
        with transaction.atomic():
            before = sorted(perms_of(team))
            response = view()
            after = sorted(perms_of(team))
            if before != after:
                ledger.append(
                    "admin.team.grant_changed",
                    actor=request.user,
                    team=team.pk,
                    **{kind: name, "before": before, "after": after},
                )
        return response


@admin.register(SocialAccount)
class SocialAccountAdmin(LedgeredAdmin):
    list_display = ["name", "handle", "network", "team", "owner", "validated", "validated_at"]
    list_filter = ["network", "validated", "team"]
    search_fields = ["name", "handle"]
    readonly_fields = ["validated_by", "validated_at"]
    actions = ["validate_accounts"]

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        choices = ", ".join(f"{key} ({label})" for key, label in connector_choices())
        form.base_fields["network"].help_text = f"One of: {choices}."
        form.base_fields["settings"].help_text = (
            'webhook: {"url": "https://...", "secret": ""} (an empty secret is generated). '
            "sandbox: {}."
        )
        return form

    def save_model(self, request, obj, form, change):
        if "validated" in form.changed_data:
            obj.validated_by = request.user if obj.validated else None
            obj.validated_at = timezone.now() if obj.validated else None
        super().save_model(request, obj, form, change)

    @admin.action(description="Validate the selected accounts")
    def validate_accounts(self, request, queryset):
        for account in queryset.filter(validated=False):
            account.validated, account.validated_by = True, request.user
            account.validated_at = timezone.now()
            with transaction.atomic():
                account.save()
                ledger.append(
                    "admin.socialaccount.validated",
                    actor=request.user,
                    object_id=account.pk,
                    object=str(account),
                )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["seq", "created_at", "actor", "event", "post_id", "short_hash"]
    list_filter = ["event"]
    search_fields = ["actor", "event", "post_id"]
    readonly_fields = [f.name for f in LedgerEntry._meta.fields]

    @admin.display(description="hash")
    def short_hash(self, entry):
        return entry.hash[:16]


@admin.register(Post)
class PostAdmin(ReadOnlyAdmin):
    """Posts change only through the workflow; the admin shows them."""

    list_display = ["pk", "team", "author", "state", "publish_at", "updated_at"]
    list_filter = ["state", "team"]


@admin.register(Publication)
class PublicationAdmin(ReadOnlyAdmin):
    list_display = ["pk", "post", "account", "state", "external_id", "attempts", "delivered_at"]
    list_filter = ["state"]
