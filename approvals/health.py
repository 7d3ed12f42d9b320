"""Account credentials: storing them (ledgered, never the secret), checking and refreshing them.

`check_account` asks the network whether the account's token still works (connector.health) and
records the answer on its AccountCredential: "reconnect" when the network refuses the token, when
the token expires within RECONNECT_MARGIN and cannot be refreshed, or when its refresh is
refused. A change of status is a ledger entry; a change to "reconnect" tells the account's owner
(the team's advisors for a firm account) and the compliance admins, before a release fails. The
beat task `tasks.check_account_credentials` runs `check_all` every six hours. Connectors get a
token with `fresh_access_token`, which refreshes one about to expire (X's last two hours).
"""

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from . import ledger, oauth
from .connectors.base import DeliveryError, Health
from .models import AccountCredential, SocialAccount

log = logging.getLogger(__name__)

RECONNECT_MARGIN = timedelta(hours=24)
# A token refreshed before use when it expires within this (connectors: fresh_access_token).
REFRESH_BEFORE_USE = timedelta(minutes=5)
NO_CREDENTIAL_NETWORKS = {"sandbox", "webhook"}  # the webhook's secret is in its settings

Status = AccountCredential.Status


def needs_credential(account_or_network):
    network = getattr(account_or_network, "network", account_or_network)
    return network not in NO_CREDENTIAL_NETWORKS


def connection_state(account):
    """What to show about an account's connection: (status value or "missing", label)."""
    credential = getattr(account, "credential", None)  # None when there is none
    if credential is None:
        if needs_credential(account):
            return "missing", "Not connected"
        return "none", "No credential needed"
    return credential.status, credential.get_status_display()


def accounts_needing_reconnect(queryset):
    """Of these accounts, the validated ones that cannot publish: reconnect needed, or none."""
    accounts = queryset.filter(validated=True).select_related("credential", "team", "owner")
    return [
        account
        for account in accounts
        if connection_state(account)[0] in (Status.RECONNECT, "missing")
    ]


# --- Storing --------------------------------------------------------------------------------------


def save_credential(account, tokens, *, actor, via):
    """Store new tokens for an account, encrypted; ledgered as set or replaced, without them."""
    with transaction.atomic():
        credential = AccountCredential.objects.select_for_update().filter(account=account).first()
        event = "replaced" if credential else "set"
        credential = credential or AccountCredential(account=account)
        credential.access_token = tokens.access_token
        credential.refresh_token = tokens.refresh_token
        credential.expires_at = tokens.expires_at
        if tokens.external_account_id:
            credential.external_account_id = tokens.external_account_id
        credential.status, credential.status_detail = Status.UNCHECKED, ""
        credential.checked_at = None
        credential.save()
        ledger.append(
            f"admin.accountcredential.{event}",
            actor=actor,
            object_id=account.pk,
            object=str(account),
            network=account.network,
            via=via,
            what=f"credential {event}",
            expires_at=credential.expires_at,
            refresh_token=bool(tokens.refresh_token),
            external_account_id=credential.external_account_id,
        )
    return credential


def remove_credential(account, *, actor):
    """Forget an account's tokens (the account stays; it cannot publish until reconnected)."""
    with transaction.atomic():
        deleted, _ = AccountCredential.objects.filter(account=account).delete()
        if deleted:
            ledger.append(
                "admin.accountcredential.removed",
                actor=actor,
                object_id=account.pk,
                object=str(account),
                network=account.network,
                what="credential removed",
            )
    return bool(deleted)


# --- Refreshing -----------------------------------------------------------------------------------


def _refreshable(credential, account):
    provider = oauth.provider_for(account.network)
    return bool(
        provider
        and provider.refreshable
        and provider.configured
        and credential.refresh_token_encrypted
    )


def refresh(account, *, within=RECONNECT_MARGIN):
    """Refresh the account's token if it expires within `within` and a refresh token exists.

    Runs under a row lock: two workers never both spend a refresh token (X rotates them: the
    second would be refused and wrongly mark the account for reconnection). Raises
    oauth.OAuthError when the network refuses. Returns the credential as stored after.
    """
    provider = oauth.provider_for(account.network)
    with transaction.atomic():
        credential = AccountCredential.objects.select_for_update().get(account=account)
        if credential.expires_at is None or credential.expires_at > timezone.now() + within:
            return credential  # someone else refreshed it meanwhile, or it is not due
        if not _refreshable(credential, account):
            raise oauth.OAuthError(f"{account.network} token cannot be refreshed")
        tokens = provider.refresh(credential.refresh_token)
        credential.access_token = tokens.access_token
        credential.refresh_token = tokens.refresh_token
        credential.expires_at = tokens.expires_at
        credential.save()
        ledger.append(
            "credential.refreshed",
            object_id=account.pk,
            object=str(account),
            network=account.network,
            expires_at=credential.expires_at,
        )
    return credential


def fresh_access_token(account):
    """The account's access token, refreshed first if it expires within minutes (for connectors).

    Raises DeliveryError(reconnect=True) when there is no usable token.
    """
    credential = AccountCredential.objects.filter(account=account).first()
    if credential is None or not credential.access_token_encrypted:
        raise DeliveryError(
            f"connect this account first: ReviewFlow has no {account.network} access token "
            f"for {account}",
            reconnect=True,
        )
    if credential.expires_at and credential.expires_at <= timezone.now() + REFRESH_BEFORE_USE:
        if _refreshable(credential, account):
            try:
                credential = refresh(account, within=REFRESH_BEFORE_USE)
            except oauth.OAuthError as error:
                if error.unreachable:
                    raise DeliveryError(str(error)) from None
                raise DeliveryError(
                    f"the token could not be refreshed ({error}): reconnect the account",
                    reconnect=True,
                ) from None
        elif credential.expires_at <= timezone.now():
            raise DeliveryError(
                "the access token has expired: reconnect the account", reconnect=True
            )
    try:
        return credential.access_token
    except ValueError as error:
        raise DeliveryError(str(error), reconnect=True) from None


# --- Checking -------------------------------------------------------------------------------------


def _when(moment):
    return timezone.localtime(moment, timezone.get_default_timezone()).strftime("%d %b %Y %H:%M")


def _expiry_problem(credential, account, now):
    """None, or why the token's expiry needs a reconnection; refreshes it first when it can.

    A refreshable token (X's last two hours) is refreshed when it has expired or is about to,
    which also proves its refresh token still works; one that cannot be refreshed needs
    reconnecting once it expires within RECONNECT_MARGIN.
    """
    if credential.expires_at is None:
        return None, credential
    if _refreshable(credential, account):
        if credential.expires_at > now + REFRESH_BEFORE_USE:
            return None, credential
        try:
            return None, refresh(account, within=REFRESH_BEFORE_USE)
        except oauth.OAuthError as error:
            if error.unreachable:
                return None, credential  # try again at the next check
            return f"The token could not be refreshed: {error}", credential
        except ValueError as error:  # the refresh token cannot be decrypted
            return str(error), credential
    if credential.expires_at > now + RECONNECT_MARGIN:
        return None, credential
    verb = "expired" if credential.expires_at <= now else "expires"
    return f"The access token {verb} {_when(credential.expires_at)}.", credential


def _ask_network(account):
    account = SocialAccount.objects.select_related("credential").get(pk=account.pk)
    try:
        health = account.connector.health(account)
    except DeliveryError as error:
        return Health(ok=False, detail=str(error), reconnect=error.reconnect)
    except ValueError as error:  # the token cannot be decrypted: the key changed
        return Health(ok=False, detail=str(error), reconnect=True)
    except LookupError as error:
        return Health(ok=False, detail=str(error))
    except Exception as error:  # a connector bug must not stop the other checks
        log.exception("Health check of account %s failed", account.pk)
        return Health(ok=False, detail=f"the check failed ({error.__class__.__name__})")
    if not isinstance(health, Health):
        return Health(ok=False, detail="the connector gave no answer")
    return health


def check_account(account, *, actor=None):
    """Check one account's credential with its network; returns the credential, or None."""
    credential = AccountCredential.objects.filter(account=account).first()
    if credential is None:
        return None
    now = timezone.now()
    problem, credential = _expiry_problem(credential, account, now)
    checked_token = credential.access_token_encrypted
    if problem:
        status, detail = Status.RECONNECT, problem
    else:
        health = _ask_network(account)
        if health.reconnect:
            status, detail = Status.RECONNECT, health.detail or "The network refused the token."
        elif health.ok:
            status, detail = Status.OK, health.detail
        else:  # the network is down or the check failed: not the token's fault, as far as known
            status, detail = credential.status, f"Could not check: {health.detail}"
    return _record(account, credential.pk, checked_token, status, detail, now, actor)


def _record(account, credential_pk, checked_token, status, detail, now, actor):
    with transaction.atomic():
        credential = AccountCredential.objects.select_for_update().filter(pk=credential_pk).first()
        if credential is None or credential.access_token_encrypted != checked_token:
            return credential  # removed or replaced while we checked: this answer is stale
        set_status(credential, account, status, detail, now, actor=actor)
    return credential


def set_status(credential, account, status, detail, now, *, actor=None, **context):
    """Record what is known of a credential (its row locked by the caller, in a transaction); a
    change is a ledger entry, and "reconnect needed" tells the owner and the admins."""
    before = credential.status
    credential.status, credential.status_detail = status, detail[:2000]
    credential.checked_at = now
    credential.save(update_fields=["status", "status_detail", "checked_at", "updated_at"])
    if before == status:
        return
    ledger.append(
        "credential.status_changed",
        actor=actor,
        object_id=account.pk,
        object=str(account),
        network=account.network,
        before=before,
        after=status,
        detail=credential.status_detail,
        **context,
    )
    if status == Status.RECONNECT:
        from . import notify

        notify.reconnect_needed(account.pk)


def check_all():
    """Check every validated account that has a credential; returns {status: count}."""
    counts = {}
    accounts = SocialAccount.objects.filter(validated=True, credential__isnull=False).order_by("pk")
    for account in accounts:
        try:
            credential = check_account(account)
        except Exception:  # one account's failure must not stop the others
            log.exception("Could not check the credential of account %s", account.pk)
            continue
        if credential is not None:
            counts[credential.status] = counts.get(credential.status, 0) + 1
    return counts
