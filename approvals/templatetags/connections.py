"""The "reconnect needed" notice: accounts someone publishes to whose token no longer works."""

from django import template
from django.urls import reverse

from approvals import health
from approvals.models import SocialAccount

register = template.Library()


@register.inclusion_tag("approvals/partials/reconnect_notice.html")
def reconnect_notice(user):
    """For an advisor, the accounts they publish to (their own and the team's firm accounts);
    for a compliance admin, every validated account; each that is not connected or whose
    token was refused or is expiring."""
    if not getattr(user, "is_authenticated", False):
        return {"accounts": []}
    admin = user.is_staff and user.has_perm("approvals.change_socialaccount")
    queryset = SocialAccount.objects.all() if admin else SocialAccount.objects.usable_by(user)
    accounts = []
    for account in health.accounts_needing_reconnect(queryset):
        state, label = health.connection_state(account)
        credential = getattr(account, "credential", None)
        accounts.append(
            {
                "account": account,
                "label": label,
                "detail": getattr(credential, "status_detail", ""),
                "connect_url": (
                    reverse("admin:approvals_socialaccount_connect", args=[account.pk])
                    if admin
                    else ""
                ),
            }
        )
    return {"accounts": accounts, "admin": admin}
