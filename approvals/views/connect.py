"""The admin's Connect page for a social account, and the OAuth callback.

Networks that offer OAuth (approvals/oauth.py: LinkedIn, X, Facebook) get a "Connect with ..."
button: the authorization-code flow, with a one-time `state` kept in the session (and a PKCE
verifier for X). Every network also takes a token entered by hand (Mastodon always: an app is
registered per instance). Tokens are stored encrypted and never shown again: the page shows the
connection's status only. Wired into the admin by SocialAccountAdmin.get_urls (staff only, and
the permission to change social accounts).
"""

import time

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from .. import health, oauth
from ..models import AccountCredential, SocialAccount

SESSION_KEY = "reviewflow_oauth_pending"
PENDING_MAX_AGE = 15 * 60  # seconds a started connection may take at the network
PENDING_MAX = 5  # connections started and not finished, kept per session

ACCOUNT_ID_HELP = {
    "linkedin": "The author URN: urn:li:organization:<id> for a company Page, urn:li:person:<id> "
    "for a member. Connecting with LinkedIn, leave it empty for the member's own profile.",
    "facebook": "The Facebook Page id; may be empty when the connecting user manages one Page.",
    "x": "Optional: the X user id.",
    "mastodon": "Optional: the account id on the instance.",
}


def _secret_field(label, required):
    return forms.CharField(
        label=label,
        required=required,
        strip=True,
        max_length=8000,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )


class TokenForm(forms.Form):
    access_token = _secret_field("Access token", True)
    refresh_token = _secret_field("Refresh token", False)
    expires_at = forms.DateTimeField(
        required=False,
        help_text="When the network says the token expires (your timezone); empty if it does "
        "not expire.",
    )
    external_account_id = forms.CharField(label="Account id on the network", required=False)

    def __init__(self, *args, network, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["external_account_id"].help_text = ACCOUNT_ID_HELP.get(network, "Optional.")
        self.fields[
            "access_token"
        ].help_text = "Stored encrypted; it is never shown again, here or anywhere."


class OAuthStartForm(forms.Form):
    external_account_id = forms.CharField(label="Account id on the network", required=False)

    def __init__(self, *args, network, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["external_account_id"].help_text = ACCOUNT_ID_HELP.get(network, "Optional.")


def redirect_uri():
    """The callback address to register with each network's app."""
    path = reverse("admin:approvals_socialaccount_oauth_callback")
    return settings.REVIEWFLOW["BASE_URL"].rstrip("/") + path


def connect_url(account):
    return reverse("admin:approvals_socialaccount_connect", args=[account.pk])


def _allowed(request):
    if not (request.user.is_staff and request.user.has_perm("approvals.change_socialaccount")):
        raise PermissionDenied


def _context(request, account, **extra):
    credential = AccountCredential.objects.filter(account=account).first()
    state, label = health.connection_state(account)
    return {
        **admin.site.each_context(request),
        "opts": SocialAccount._meta,
        "title": f"Connect {account}",
        "account": account,
        "credential": credential,
        "connection_state": state,
        "connection_label": label,
        "needs_credential": health.needs_credential(account),
        "redirect_uri": redirect_uri(),
        **extra,
    }


def connect(request, object_id):
    """The Connect page: status, OAuth start, token entry, check now, disconnect."""
    _allowed(request)
    account = get_object_or_404(SocialAccount, pk=object_id)
    provider = oauth.provider_for(account.network)
    token_form = TokenForm(prefix="token", network=account.network)
    start_form = OAuthStartForm(prefix="oauth", network=account.network)
    if provider:
        credential = AccountCredential.objects.filter(account=account).first()
        start_form.initial["external_account_id"] = getattr(credential, "external_account_id", "")
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "token" and not health.needs_credential(account):
            messages.error(request, f"{account.network} accounts need no credential.")
            status = 400
        elif action == "token":
            token_form = TokenForm(request.POST, prefix="token", network=account.network)
            if token_form.is_valid():
                data = token_form.cleaned_data
                tokens = oauth.Tokens(
                    access_token=data["access_token"],
                    refresh_token=data["refresh_token"],
                    expires_at=data["expires_at"],
                    external_account_id=data["external_account_id"],
                )
                health.save_credential(account, tokens, actor=request.user, via="token entry")
                return _checked(request, account, "Token stored.")
            status = 400
        elif action == "oauth" and provider:
            start_form = OAuthStartForm(request.POST, prefix="oauth", network=account.network)
            if not provider.configured:
                messages.error(request, _unconfigured(provider))
                status = 400
            elif start_form.is_valid():
                return _start(request, account, provider, start_form.cleaned_data)
            else:
                status = 400
        elif action == "check":
            return _checked(request, account, "")
        elif action == "disconnect":
            if health.remove_credential(account, actor=request.user):
                messages.success(request, "The credential is removed: the account cannot publish.")
            return HttpResponseRedirect(connect_url(account))
        else:
            messages.error(request, "Unknown action.")
            status = 400
    context = _context(
        request,
        account,
        provider=provider,
        provider_configured=bool(provider and provider.configured),
        unconfigured=_unconfigured(provider) if provider else "",
        scopes=provider.scope_separator.join(provider.scopes) if provider else "",
        token_form=token_form,
        start_form=start_form,
    )
    return TemplateResponse(
        request, "admin/approvals/socialaccount/connect.html", context, status=status
    )


def _unconfigured(provider):
    prefix = f"REVIEWFLOW_{provider.network.upper()}_CLIENT"
    return (
        f"Connecting with {provider.label} needs the app registered with {provider.label}: "
        f"set {prefix}_ID and {prefix}_SECRET in the environment. Or enter a token below."
    )


def _start(request, account, provider, data):
    now = time.time()
    pending = {
        state: entry
        for state, entry in request.session.get(SESSION_KEY, {}).items()
        if now - entry.get("at", 0) < PENDING_MAX_AGE
    }
    while len(pending) >= PENDING_MAX:
        pending.pop(min(pending, key=lambda state: pending[state]["at"]))
    state = oauth.new_state()
    verifier = oauth.new_code_verifier() if provider.pkce else ""
    pending[state] = {
        "account": account.pk,
        "network": account.network,
        "user": request.user.pk,
        "verifier": verifier,
        "external_account_id": data.get("external_account_id", "").strip(),
        "at": now,
    }
    request.session[SESSION_KEY] = pending
    return HttpResponseRedirect(
        provider.authorization_url(
            redirect_uri=redirect_uri(),
            state=state,
            code_verifier=verifier,
            external_account_id=data.get("external_account_id", "").strip(),
        )
    )


def oauth_callback(request):
    """Where the network sends the admin back: check the state, exchange the code, store."""
    _allowed(request)
    state = request.GET.get("state", "")
    pending = dict(request.session.get(SESSION_KEY, {}))
    entry = pending.pop(state, None) if state else None
    request.session[SESSION_KEY] = pending  # a state is used once, whatever happens next
    if (
        entry is None
        or entry.get("user") != request.user.pk
        or time.time() - entry.get("at", 0) > PENDING_MAX_AGE
    ):
        return _refused(
            request,
            None,
            "This answer does not match a connection started from this browser in the last "
            f"{PENDING_MAX_AGE // 60} minutes (state mismatch). Nothing was stored. Start again "
            "from the account's Connect page.",
        )
    account = get_object_or_404(SocialAccount, pk=entry["account"])
    provider = oauth.provider_for(account.network)
    if provider is None or account.network != entry["network"]:
        return _refused(request, account, "The account's network changed. Nothing was stored.")
    if request.GET.get("error"):
        reason = request.GET.get("error_description") or request.GET["error"]
        return _refused(
            request,
            account,
            f"{provider.label} did not grant access: {reason[:300]} "
            f"({request.GET['error'][:100]}). Nothing was stored.",
        )
    code = request.GET.get("code", "")
    if not code:
        return _refused(
            request, account, f"{provider.label} sent no authorization code. Nothing was stored."
        )
    try:
        tokens = provider.exchange_code(
            code, redirect_uri=redirect_uri(), code_verifier=entry.get("verifier", "")
        )
        tokens = provider.complete(tokens, entry.get("external_account_id", ""))
    except oauth.OAuthError as error:
        return _refused(
            request,
            account,
            f"{error} Nothing was stored.",
            status=502 if error.unreachable else 400,
        )
    health.save_credential(account, tokens, actor=request.user, via="oauth")
    return _checked(request, account, f"Connected with {provider.label}.")


def _refused(request, account, message, status=400):
    context = {
        **admin.site.each_context(request),
        "opts": SocialAccount._meta,
        "title": "Connection refused",
        "account": account,
        "message": message,
    }
    return TemplateResponse(
        request, "admin/approvals/socialaccount/connect_refused.html", context, status=status
    )


def _checked(request, account, done):
    """Run the health check now and say its result, then back to the Connect page."""
    credential = health.check_account(account, actor=request.user)
    if credential is None:
        messages.warning(request, f"{done} No credential to check.".strip())
    elif credential.status == AccountCredential.Status.OK:
        detail = f" ({credential.status_detail})" if credential.status_detail else ""
        messages.success(request, f"{done} The network accepts the token{detail}.".strip())
    elif credential.status == AccountCredential.Status.RECONNECT:
        messages.error(
            request,
            f"{done} Reconnect needed: {credential.status_detail}".strip(),
        )
    else:
        messages.warning(request, f"{done} {credential.status_detail}".strip())
    return HttpResponseRedirect(connect_url(account))
