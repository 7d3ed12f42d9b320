from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.forms.models import BaseInlineFormSet, model_to_dict
from django.http import FileResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from guardian.admin import GuardedModelAdmin
from guardian.shortcuts import get_group_perms, get_user_perms

from . import conditions, health, ledger, routing, workflow
from .connectors import connector_choices
from .models import (
    AccountCredential,
    ApprovalRule,
    LedgerEntry,
    LedgerExport,
    Post,
    Publication,
    ReviewStep,
    RuleStep,
    SocialAccount,
    StepClaim,
    Tag,
    Team,
)
from .models.accounts import Membership
from .models.rules import ROUTING_HELP


def _snapshot(obj):
    data = model_to_dict(obj)
    return {
        key: (value.pk if hasattr(value, "pk") else value)
        for key, value in data.items()
        if not isinstance(value, list | tuple | set) and key != "settings"
    }


class LedgeredAdmin(admin.ModelAdmin):
    """Every admin change of configuration is a ledger entry in the same transaction; a bulk
    deletion ("delete selected") is one entry per object."""

    snapshot = staticmethod(_snapshot)  # what `before` and `after` record of an object

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            before = self.snapshot(type(obj).objects.get(pk=obj.pk)) if change else None
            super().save_model(request, obj, form, change)
            ledger.append(
                f"admin.{obj._meta.model_name}.{'changed' if change else 'added'}",
                actor=request.user,
                object_id=obj.pk,
                object=str(obj),
                before=before,
                after=self.snapshot(obj),
            )

    def delete_model(self, request, obj):
        with transaction.atomic():
            self._ledger_deleted(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self._ledger_deleted(request, obj)
            super().delete_queryset(request, queryset)

    def _ledger_deleted(self, request, obj):
        ledger.append(
            f"admin.{obj._meta.model_name}.deleted",
            actor=request.user,
            object_id=obj.pk,
            object=str(obj),
            before=self.snapshot(obj),
        )


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
    list_display = [
        "name",
        "handle",
        "network",
        "team",
        "owner",
        "validated",
        "validated_at",
        "connection",
    ]
    list_filter = ["network", "validated", "team", "credential__status"]
    list_select_related = ["team", "owner", "credential"]
    search_fields = ["name", "handle"]
    readonly_fields = ["validated_by", "validated_at", "connection_detail"]
    actions = ["validate_accounts", "check_connections"]

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

    # Credentials: connected on the Connect page, shown by status only, never by value.

    @admin.display(description="connection", ordering="credential__status")
    def connection(self, account):
        state, label = health.connection_state(account)
        if state in (AccountCredential.Status.RECONNECT, "missing"):
            return format_html('<strong style="color: #ba2121">{}</strong>', label)
        return label

    @admin.display(description="connection")
    def connection_detail(self, account):
        if account.pk is None:
            return "Save the account, then connect it."
        state, label = health.connection_state(account)
        credential = AccountCredential.objects.filter(account=account).first()
        detail = f" — {credential.status_detail}" if credential and credential.status_detail else ""
        return format_html(
            '{} <a class="button" href="{}">Connect…</a>',
            f"{label}{detail}",
            reverse("admin:approvals_socialaccount_connect", args=[account.pk]),
        )

    @admin.action(permissions=["change"], description="Check the connection of the selected")
    def check_connections(self, request, queryset):
        _check_connections(self, request, queryset)

    def get_urls(self):
        from .views import connect

        own = [
            path(
                "oauth/callback/",
                self.admin_site.admin_view(connect.oauth_callback),
                name="approvals_socialaccount_oauth_callback",
            ),
            path(
                "<path:object_id>/connect/",
                self.admin_site.admin_view(connect.connect),
                name="approvals_socialaccount_connect",
            ),
        ]
        return [*own, *super().get_urls()]


def _check_connections(model_admin, request, accounts):
    counts = {}
    for account in accounts:
        credential = health.check_account(account, actor=request.user)
        label = credential.get_status_display() if credential else "Not connected"
        counts[label] = counts.get(label, 0) + 1
    summary = ", ".join(f"{label}: {count}" for label, count in sorted(counts.items()))
    model_admin.message_user(request, f"Checked. {summary or 'Nothing to check.'}")


@admin.register(AccountCredential)
class AccountCredentialAdmin(admin.ModelAdmin):
    """Stored credentials, by status only: a token is write-only (the Connect page sets it)."""

    list_display = ["account", "status_label", "checked_at", "expires_at", "external_account_id"]
    list_filter = ["status", "account__network"]
    list_select_related = ["account"]
    search_fields = ["account__name", "account__handle", "external_account_id"]
    fields = [
        "account",
        "status",
        "status_detail",
        "checked_at",
        "expires_at",
        "external_account_id",
        "updated_at",
    ]
    readonly_fields = fields
    actions = ["check_now"]

    @admin.display(description="status", ordering="status")
    def status_label(self, credential):
        if credential.status == AccountCredential.Status.RECONNECT:
            return format_html(
                '<strong style="color: #ba2121">{}</strong>', credential.get_status_display()
            )
        return credential.get_status_display()

    def has_add_permission(self, request):
        return False  # the account's Connect page stores tokens

    def has_change_permission(self, request, obj=None):
        return False

    def delete_model(self, request, obj):
        health.remove_credential(obj.account, actor=request.user)

    def delete_queryset(self, request, queryset):
        for credential in queryset.select_related("account"):
            health.remove_credential(credential.account, actor=request.user)

    @admin.action(permissions=["view"], description="Check the selected credentials now")
    def check_now(self, request, queryset):
        if not request.user.has_perm("approvals.change_socialaccount"):
            raise PermissionDenied
        accounts = [credential.account for credential in queryset.select_related("account")]
        _check_connections(self, request, accounts)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LedgerExportForm(forms.Form):
    first_day = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Entries from this day on (server timezone). Empty: from the first entry.",
    )
    last_day = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Up to the end of this day. Empty: up to the last entry.",
    )
    post = forms.IntegerField(
        required=False, min_value=1, help_text="Only the entries of this post (its number)."
    )

    def clean(self):
        data = super().clean()
        first, last = data.get("first_day"), data.get("last_day")
        if first and last and last < first:
            raise ValidationError("The last day is before the first day.")
        return data

    def scope(self):
        """What to export, as ledger.request_export takes it."""
        since, until = ledger.export_period(
            self.cleaned_data["first_day"], self.cleaned_data["last_day"]
        )
        return {"since": since, "until": until, "post_id": self.cleaned_data["post"]}


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["seq", "created_at", "actor", "event", "post_id", "short_hash"]
    list_filter = ["event"]
    search_fields = ["actor", "event", "post_id"]
    readonly_fields = [f.name for f in LedgerEntry._meta.fields]

    @admin.display(description="hash")
    def short_hash(self, entry):
        return entry.hash[:16]

    def changelist_view(self, request, extra_context=None):
        # The head as an anchor to keep outside ReviewFlow: `verify_ledger --anchor` checks it.
        head = LedgerEntry.objects.order_by("-seq").values_list("seq", "hash").first()
        context = {"anchor": f"{head[0]}:{head[1]}" if head else None, **(extra_context or {})}
        return super().changelist_view(request, context)

    def get_urls(self):
        export = path(
            "export/",
            self.admin_site.admin_view(self.export_view),
            name="approvals_ledgerentry_export",
        )
        return [export, *super().get_urls()]

    def export_view(self, request):
        """Ask for the ledger, a period of it or one post's entries, as a file for an auditor: a
        worker writes it (LedgerExportAdmin lists it), so years of ledger hold no web process."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = LedgerExportForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            export = ledger.request_export(actor=request.user, **form.scope())
            self.message_user(
                request,
                f"Export #{export.pk} is asked for: a worker writes it. It is listed below, with a"
                " link to download it once ready (this page refreshes itself until then).",
            )
            return HttpResponseRedirect(reverse("admin:approvals_ledgerexport_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Export the ledger for an auditor",
            "form": form,
            "form_title": "What to export (all empty: the whole ledger)",
            "submit_label": "Prepare the export",
            "hash_rule": ledger.EXPORT_HASH_RULE,
        }
        return TemplateResponse(
            request,
            "admin/approvals/ledgerentry/export.html",
            context,
            status=400 if form.is_bound else 200,
        )


@admin.register(LedgerExport)
class LedgerExportAdmin(admin.ModelAdmin):
    """The exports asked for, their state, and their files to download; deleting one deletes
    its file (the ledger keeps the entries, and the record of the export)."""

    list_display = ["id", "requested_at", "requested_by", "scope", "state", "entries", "download"]
    # The file is private (MEDIA_ROOT is never served as is): the download link stands for it.
    exclude = ["file"]
    readonly_fields = [
        *(f.name for f in LedgerExport._meta.fields if f.name not in ("id", "file")),
        "download",
    ]
    change_list_template = "admin/approvals/ledgerexport/change_list.html"

    def has_add_permission(self, request):
        return False  # asked for through the ledger's export form

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="what")
    def scope(self, export):
        parts = [
            f"from {timezone.localtime(export.since):%Y-%m-%d}" if export.since else "",
            f"to {timezone.localtime(export.until).date() - timedelta(days=1)}"  # its last day
            if export.until
            else "",
            f"post {export.post_id}" if export.post_id else "",
        ]
        return " ".join(part for part in parts if part) or "the whole ledger"

    @admin.display(description="file")
    def download(self, export):
        if export.state != LedgerExport.State.READY:
            return export.error or "–"
        url = reverse("admin:approvals_ledgerexport_download", args=[export.pk])
        return format_html('<a href="{}">Download</a> ({})', url, filesizeformat(export.size))

    def get_urls(self):
        download = path(
            "<int:pk>/download/",
            self.admin_site.admin_view(self.download_view),
            name="approvals_ledgerexport_download",
        )
        return [download, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        pending = LedgerExport.objects.filter(
            state__in=[LedgerExport.State.QUEUED, LedgerExport.State.WRITING]
        ).exists()
        return super().changelist_view(request, {"refresh": pending, **(extra_context or {})})

    def download_view(self, request, pk):
        """The file, to whoever may read the ledger; each download is recorded."""
        may_read = request.user.has_perm("approvals.view_ledgerentry")
        if not (may_read and self.has_view_permission(request)):
            raise PermissionDenied
        export = get_object_or_404(LedgerExport, pk=pk, state=LedgerExport.State.READY)
        try:
            data = export.file.open("rb")
        except OSError:
            self.message_user(
                request, f"The file of export #{export.pk} is missing: ask for it again.",
                messages.ERROR,
            )  # fmt: skip
            return HttpResponseRedirect(reverse("admin:approvals_ledgerexport_changelist"))
        ledger.record_download(export, request.user)
        return FileResponse(
            data,
            as_attachment=True,
            filename=export.file.name.rsplit("/", 1)[-1],
            content_type="application/x-ndjson; charset=utf-8",
        )

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        obj.file.delete(save=False)

    def delete_queryset(self, request, queryset):
        files = [export.file for export in queryset if export.file]
        super().delete_queryset(request, queryset)
        for file in files:
            file.delete(save=False)


@admin.register(Post)
class PostAdmin(ReadOnlyAdmin):
    """Posts change only through the workflow; the admin shows them."""

    list_display = ["pk", "team", "author", "state", "publish_at", "updated_at"]
    list_filter = ["state", "team"]


@admin.register(Publication)
class PublicationAdmin(ReadOnlyAdmin):
    list_display = ["pk", "post", "account", "state", "external_id", "attempts", "delivered_at"]
    list_filter = ["state"]


@admin.register(Tag)
class TagAdmin(LedgeredAdmin):
    list_display = ["name", "kind"]
    list_filter = ["kind"]
    search_fields = ["name"]


# --- Approval rules ------------------------------------------------------------------------------


def _due_text(due_hours, business_hours):
    if due_hours is None:
        return "no limit"
    unit = "business hour" if business_hours else "hour"
    return f"{due_hours} {unit}{'' if due_hours == 1 else 's'}"


def _condition_text(condition):
    try:
        return conditions.parse(condition).describe()
    except conditions.ConditionError as error:
        return f"invalid: {error}"


def _rule_snapshot(rule):
    """A rule as the ledger keeps it: its settings, its condition and its steps, by name."""
    steps = (
        RuleStep.objects.filter(rule=rule)
        .select_related("group", "escalation_group")
        .order_by("stage", "group__name", "pk")
    )
    return {
        "name": rule.name,
        "description": rule.description,
        "priority": rule.priority,
        "enabled": rule.enabled,
        "requires_review": rule.requires_review,
        "allow_multiple_steps_per_reviewer": rule.allow_multiple_steps_per_reviewer,
        "condition": rule.condition,
        "version": rule.version,
        "steps": [
            {
                "group": step.group.name,
                "quorum": step.quorum,
                "stage": step.stage,
                "due_hours": step.due_hours,
                "business_hours": step.business_hours,
                "escalation_group": step.escalation_group.name if step.escalation_group else None,
            }
            for step in steps
        ],
    }


def _tests_in(node):
    """The leaf tests of a parsed condition."""
    if isinstance(node, conditions.All | conditions.Any):
        for part in node.parts:
            yield from _tests_in(part)
    elif isinstance(node, conditions.Not):
        yield from _tests_in(node.part)
    else:
        yield node


def _lowered(queryset):
    return {name.lower() for name in queryset.values_list("name", flat=True)}


# Tests that name things: the test's attribute holding the names, and the names that exist.
NAMED_TESTS = {
    conditions.Team: ("teams", lambda: _lowered(Team.objects)),
    conditions.TagTest: ("tags", lambda: _lowered(Tag.objects)),
    conditions.Network: ("networks", lambda: {network for network, _ in connector_choices()}),
    conditions.Account: ("ids", lambda: set(SocialAccount.objects.values_list("pk", flat=True))),
}


def _unknown_names(condition):
    """What a condition names that does not exist: a typo never matches, and says nothing."""
    unknown = []
    for test in _tests_in(conditions.parse(condition)):
        if type(test) in NAMED_TESTS:
            attribute, existing = NAMED_TESTS[type(test)]
            missing = sorted(getattr(test, attribute) - existing(), key=str)
            unknown += [f"{test.key} “{name}”" for name in missing]
    return unknown


def _is_catch_all(rule):
    """An enabled rule that requires review of every post."""
    return rule.enabled and rule.requires_review and not rule.condition


def _catch_all_left():
    rules = ApprovalRule.objects.filter(enabled=True, requires_review=True).only("condition")
    return any(not rule.condition for rule in rules)


def _removal_refusal(rules):
    """Why disabling or deleting these rules is refused, or None.

    Without an enabled rule that requires review, no post could ever be reviewed again.
    """
    reviewing = [rule for rule in rules if rule.enabled and rule.requires_review]
    if not reviewing:
        return None
    others = ApprovalRule.objects.filter(enabled=True, requires_review=True).exclude(
        pk__in=[rule.pk for rule in rules]
    )
    if others.exists():
        return None
    names = ", ".join(f"“{rule.name}”" for rule in reviewing)
    last = "is the last enabled rule" if len(reviewing) == 1 else "are the last enabled rules"
    return (
        f"Refused: {names} {last} that requires review; without one, no post could be reviewed. "
        "Enable or add another rule that requires review first."
    )


CATCH_ALL_WARNING = (
    "“{name}” was the catch-all rule (it required review of every post) and no enabled rule "
    "matches every post any more: a post that no other rule matches cannot be submitted."
)


class ApprovalRuleForm(forms.ModelForm):
    class Meta:
        model = ApprovalRule
        fields = [
            "name",
            "description",
            "priority",
            "enabled",
            "condition",
            "requires_review",
            "allow_multiple_steps_per_reviewer",
        ]
        widgets = {
            "condition": forms.Textarea(
                attrs={"rows": 5, "cols": 90, "style": "font-family: monospace"}
            ),
        }

    def clean_condition(self):
        condition = self.cleaned_data.get("condition")
        return {} if condition in (None, "") else condition  # an emptied box means every post

    def clean(self):
        cleaned = super().clean()
        rule = self.instance
        if rule.pk and not (cleaned.get("enabled") and cleaned.get("requires_review")):
            stored = ApprovalRule.objects.get(pk=rule.pk)
            if refusal := _removal_refusal([stored]):
                raise ValidationError(refusal)
        return cleaned


class RuleStepFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        if any(self.errors):
            return
        kept = [
            form.cleaned_data
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        if self.instance.requires_review and not kept:
            raise ValidationError(
                "A rule that requires review needs at least one step. "
                "Untick “requires review” for a rule that exempts posts from review."
            )
        if not self.instance.requires_review and kept:
            raise ValidationError(
                "This rule requires no review, so it routes to nobody: remove its steps, "
                "or tick “requires review”."
            )
        seen = set()
        for data in kept:
            key = (data["group"].pk, data["stage"])
            if key in seen:
                raise ValidationError(
                    f"Two steps name {data['group']} in stage {data['stage']}: "
                    "keep one, with the quorum you need."
                )
            seen.add(key)


class RuleStepInline(admin.TabularInline):
    model = RuleStep
    formset = RuleStepFormSet
    fields = ["stage", "group", "quorum", "due_hours", "business_hours", "escalation_group"]
    verbose_name = "step"
    verbose_name_plural = "steps (stages run in order; the steps of one stage run in parallel)"

    def get_extra(self, request, obj=None, **kwargs):
        return 0 if obj else 1


class SimulateRouteForm(forms.Form):
    author = forms.ModelChoiceField(
        queryset=None, help_text="An advisor; rules that test the team see theirs."
    )
    accounts = forms.ModelMultipleChoiceField(
        queryset=None, help_text="The accounts the post would be published to."
    )
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}), required=False, strip=False
    )
    link = forms.URLField(required=False, assume_scheme="https")
    tags = forms.ModelMultipleChoiceField(queryset=None, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        author = self.fields["author"]
        author.queryset = (
            get_user_model()
            .objects.filter(membership__isnull=False)
            .select_related("membership__team")
            .order_by("username")
        )
        author.label_from_instance = lambda user: f"{user.get_username()} ({user.membership.team})"
        accounts = self.fields["accounts"]
        accounts.queryset = SocialAccount.objects.select_related("team").order_by(
            "team__name", "name"
        )
        accounts.label_from_instance = lambda account: (
            f"#{account.pk} {account.name} ({account.network}, {account.team})"
        )
        self.fields["tags"].queryset = Tag.objects.all()


@admin.register(ApprovalRule)
class ApprovalRuleAdmin(admin.ModelAdmin):
    """Rules decide who must approve what. Every change is one ledger entry and a new version."""

    form = ApprovalRuleForm
    inlines = [RuleStepInline]
    list_display = [
        "name",
        "priority",
        "enabled",
        "requires_review",
        "version",
        "condition_text",
        "steps_text",
    ]
    list_filter = ["enabled", "requires_review"]
    search_fields = ["name", "description"]
    readonly_fields = ["version", "updated_at"]
    fieldsets = [
        (
            "How rules combine",
            {
                "description": ROUTING_HELP,
                "fields": [
                    "name",
                    "description",
                    ("priority", "enabled"),
                    ("version", "updated_at"),
                ],
            },
        ),
        (
            "Which posts, and what review",
            {"fields": ["condition", "requires_review", "allow_multiple_steps_per_reviewer"]},
        ),
    ]
    actions = ["enable_rules", "disable_rules", "delete_selected"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related("steps__group", "steps__escalation_group")
        )

    @admin.display(description="condition")
    def condition_text(self, rule):
        return _condition_text(rule.condition)

    @admin.display(description="steps")
    def steps_text(self, rule):
        if not rule.requires_review:
            return "none: exempts matching posts from review"
        return "; ".join(
            f"stage {step.stage}: {step.group} ×{step.quorum}, "
            f"{_due_text(step.due_hours, step.business_hours)}"
            + (f", escalates to {step.escalation_group}" if step.escalation_group else "")
            for step in rule.steps.all()
        )

    # Ledger: `before` is read under a row lock when the rule is saved; the entry is written once
    # the inline steps are saved too, in the admin's transaction, so it holds the final state.

    def save_model(self, request, obj, form, change):
        if change:
            stored = ApprovalRule.objects.select_for_update().get(pk=obj.pk)
            obj._ledger_before = _rule_snapshot(stored)
            obj.version = stored.version
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        rule = form.instance
        before = getattr(rule, "_ledger_before", None) if change else None
        after = _rule_snapshot(rule)
        if before is not None:
            if after == before:
                return  # saved unchanged: no new version, nothing to record
            rule.version = before["version"] + 1
            rule.save(update_fields=["version"])
            after["version"] = rule.version
        self._record(request, rule, "changed" if change else "added", before, after)
        if unknown := _unknown_names(rule.condition):
            self.message_user(
                request,
                f"The condition of “{rule.name}” names what does not exist: "
                f"{', '.join(unknown)}. It will not match on these until they exist.",
                messages.WARNING,
            )
        if before is not None and before["enabled"] and not before["condition"]:
            if before["requires_review"] and not _is_catch_all(rule) and not _catch_all_left():
                self.message_user(
                    request, CATCH_ALL_WARNING.format(name=rule.name), messages.WARNING
                )

    def delete_view(self, request, object_id, extra_context=None):
        rule = self.get_object(request, unquote(object_id))
        if rule is not None and (refusal := _removal_refusal([rule])):
            self.message_user(request, refusal, messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:approvals_approvalrule_change", args=[rule.pk])
            )
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request, obj):
        with transaction.atomic():
            self._record(request, obj, "deleted", _rule_snapshot(obj), None)
            super().delete_model(request, obj)
        self._warn_if_catch_all_gone(request, [obj])

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            rules = list(queryset)
            for rule in rules:
                self._record(request, rule, "deleted", _rule_snapshot(rule), None)
            super().delete_queryset(request, queryset)
        self._warn_if_catch_all_gone(request, rules)

    def _warn_if_catch_all_gone(self, request, rules):
        if _catch_all_left():
            return
        for rule in rules:
            if rule.requires_review and not rule.condition:
                self.message_user(
                    request, CATCH_ALL_WARNING.format(name=rule.name), messages.WARNING
                )

    @admin.action(permissions=["delete"], description="Delete the selected rules")
    def delete_selected(self, request, queryset):
        if refusal := _removal_refusal(list(queryset)):
            self.message_user(request, refusal, messages.ERROR)
            return None
        return django_delete_selected(self, request, queryset)

    @admin.action(permissions=["change"], description="Enable the selected rules")
    def enable_rules(self, request, queryset):
        self._switch(request, queryset, enabled=True)

    @admin.action(permissions=["change"], description="Disable the selected rules")
    def disable_rules(self, request, queryset):
        self._switch(request, queryset, enabled=False)

    def _switch(self, request, queryset, *, enabled):
        with transaction.atomic():
            rules = list(queryset.select_for_update().exclude(enabled=enabled))
            if not enabled and (refusal := _removal_refusal(rules)):
                self.message_user(request, refusal, messages.ERROR)
                return
            for rule in rules:
                before = _rule_snapshot(rule)
                rule.enabled, rule.version = enabled, rule.version + 1
                rule.save(update_fields=["enabled", "version", "updated_at"])
                self._record(request, rule, "changed", before, _rule_snapshot(rule))
        done = "enabled" if enabled else "disabled"
        self.message_user(request, f"{len(rules)} rule{'s' * (len(rules) != 1)} {done}.")
        if not enabled:
            self._warn_if_catch_all_gone(request, rules)

    def _record(self, request, rule, what, before, after):
        ledger.append(
            f"admin.approvalrule.{what}",
            actor=request.user,
            object_id=rule.pk,
            object=rule.name,
            before=before,
            after=after,
        )

    # The simulator: the route a post would get now, and which rule produced each step.

    def get_urls(self):
        simulate = path(
            "simulate/",
            self.admin_site.admin_view(self.simulate_view),
            name="approvals_approvalrule_simulate",
        )
        return [simulate, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {"routing_help": ROUTING_HELP, **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def simulate_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = SimulateRouteForm(request.POST if request.method == "POST" else None)
        route = no_route = None
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            try:
                route = routing.simulate(
                    author=data["author"],
                    account_ids=[account.pk for account in data["accounts"]],
                    text=data["text"],
                    link=data["link"],
                    tag_names=[tag.name for tag in data["tags"]],
                )
            except routing.NoRoute as error:
                no_route = str(error)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Simulate a route",
            "form": form,
            "form_title": "A post to route",
            "submit_label": "Simulate",
            "route": route,
            "no_route": no_route,
            "routing_help": ROUTING_HELP,
        }
        if route is not None:
            context["steps"] = [
                {
                    "stage": step.stage,
                    "group": step.group.name,
                    "quorum": step.quorum,
                    "due": _due_text(step.due_hours, step.business_hours),
                    "escalation_group": step.escalation_group,
                    "rules": step.reasons,
                }
                for step in route.steps
            ]
            context["matched"] = [
                {"rule": rule, "condition": _condition_text(rule.condition)}
                for rule in route.matched
            ]
        return TemplateResponse(request, "admin/approvals/approvalrule/simulate.html", context)


@admin.register(ReviewStep)
class ReviewStepAdmin(ReadOnlyAdmin):
    """Frozen routes: what each revision needs, and why. Read-only; the workflow moves them."""

    list_display = [
        "post",
        "revision",
        "group",
        "stage",
        "quorum",
        "state",
        "due_at",
        "escalated_at",
        "why",
    ]
    list_filter = ["state", "group"]
    list_select_related = ["post", "revision__post", "group"]


@admin.register(StepClaim)
class StepClaimAdmin(admin.ModelAdmin):
    """Who is reviewing what. Deleting a claim releases it through the workflow (ledgered)."""

    list_display = ["reviewer", "step", "claimed_at", "expires_at", "is_live"]
    list_select_related = ["reviewer", "step__group", "step__revision__post"]
    readonly_fields = ["step", "reviewer", "claimed_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and request.user.has_perm(
            "approvals.oversee_posts"
        )

    @admin.display(description="lapses at")
    def expires_at(self, claim):
        return claim.expires_at

    @admin.display(description="live", boolean=True)
    def is_live(self, claim):
        return claim.is_live

    def delete_model(self, request, obj):
        self._release(request, obj)

    def delete_queryset(self, request, queryset):
        for claim in queryset.select_related("step"):
            self._release(request, claim)

    def _release(self, request, claim):
        try:
            workflow.release_claim(claim.step.post_id, request.user, claim_id=claim.pk)
        except workflow.WorkflowError as error:
            self.message_user(request, error.message, messages.ERROR)


# --- Automated checks: lexicon, required disclaimers, network rules ------------------------------

from django.db.models import JSONField  # noqa: E402

from .models import Disclaimer, LexiconEntry, NetworkRule  # noqa: E402
from .models.policy import Category  # noqa: E402
from .policy.links import domain_list  # noqa: E402


def _policy_snapshot(obj):
    """_snapshot, with the list settings (JSON fields) and the many-to-many names kept."""
    data = _snapshot(obj)
    for field in obj._meta.concrete_fields:
        if isinstance(field, JSONField):
            data[field.name] = field.value_from_object(obj)
    for field in obj._meta.many_to_many:
        related = getattr(obj, field.name).all() if obj.pk else []
        data[field.name] = sorted(str(item) for item in related)
    return data


class PolicyAdmin(LedgeredAdmin):
    """Ledgered as LedgeredAdmin, with lists and many-to-many values in `before` and `after`,
    recorded once the related objects are saved."""

    snapshot = staticmethod(_policy_snapshot)

    def save_model(self, request, obj, form, change):
        stored = type(obj).objects.filter(pk=obj.pk).first() if change else None
        obj._ledger_before = self.snapshot(stored) if stored else None
        admin.ModelAdmin.save_model(self, request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        obj = form.instance
        ledger.append(
            f"admin.{obj._meta.model_name}.{'changed' if change else 'added'}",
            actor=request.user,
            object_id=obj.pk,
            object=str(obj),
            before=getattr(obj, "_ledger_before", None),
            after=self.snapshot(obj),
        )


@admin.register(LexiconEntry)
class LexiconEntryAdmin(PolicyAdmin):
    list_display = ["term", "language", "category", "severity", "enabled"]
    list_filter = ["language", "category", "severity", "enabled"]
    search_fields = ["term", "explanation", "alternative", "exceptions"]
    list_per_page = 100


def _string_list(value, name):
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError(f'{name}: a list of names, e.g. ["x", "linkedin"], or [].')
    return [item.strip() for item in value if item.strip()]


class DisclaimerForm(forms.ModelForm):
    link_url = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text=Disclaimer._meta.get_field("link_url").help_text,
    )

    class Meta:
        model = Disclaimer
        fields = [
            "name",
            "text",
            "language",
            "networks",
            "teams",
            "categories",
            "link_url",
            "link_allowed_on",
            "severity",
            "enabled",
        ]

    def clean_networks(self):
        networks = _string_list(self.cleaned_data.get("networks") or [], "Networks")
        return [network.lower() for network in networks]

    def clean_link_allowed_on(self):
        networks = _string_list(self.cleaned_data.get("link_allowed_on") or [], "Networks")
        return [network.lower() for network in networks]

    def clean_categories(self):
        categories = _string_list(self.cleaned_data.get("categories") or [], "Categories")
        if unknown := sorted(set(categories) - set(Category.values)):
            raise ValidationError(
                f"Unknown categories: {', '.join(unknown)}. Known: {', '.join(Category.values)}."
            )
        return categories

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("link_allowed_on") and not cleaned.get("link_url"):
            self.add_error("link_url", "Where is the full mention? Needed to accept a link.")
        return cleaned


@admin.register(Disclaimer)
class DisclaimerAdmin(PolicyAdmin):
    form = DisclaimerForm
    list_display = ["name", "language", "severity", "enabled", "categories", "networks"]
    list_filter = ["language", "severity", "enabled"]
    search_fields = ["name", "text"]
    filter_horizontal = ["teams"]


class NetworkRuleForm(forms.ModelForm):
    class Meta:
        model = NetworkRule
        fields = [
            "network",
            "max_length",
            "weighted",
            "url_length",
            "max_hashtags",
            "max_mentions",
            "allowed_domains",
            "denied_domains",
            "refuse_shorteners",
        ]

    def _clean_domains(self, name):
        value = self.cleaned_data.get(name) or ""
        bad = [
            line.strip()
            for line in value.splitlines()
            if line.strip() and not any("." in d for d in domain_list(line))
        ]
        if bad:
            raise ValidationError(f"Not domain names: {', '.join(bad)} (one per line).")
        return "\n".join(line.strip() for line in value.splitlines() if line.strip())

    def clean_allowed_domains(self):
        return self._clean_domains("allowed_domains")

    def clean_denied_domains(self):
        return self._clean_domains("denied_domains")


@admin.register(NetworkRule)
class NetworkRuleAdmin(PolicyAdmin):
    form = NetworkRuleForm
    list_display = [
        "network",
        "max_length",
        "weighted",
        "url_length",
        "max_hashtags",
        "max_mentions",
        "refuse_shorteners",
    ]
    list_filter = ["weighted", "refuse_shorteners"]
    search_fields = ["network"]
