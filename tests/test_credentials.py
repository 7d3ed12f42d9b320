"""Network credentials: encrypted at rest, write-only in the admin, ledgered without the secret."""

import json

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.urls import reverse

from approvals import checks, health, oauth, secrets
from approvals.models import AccountCredential, LedgerEntry, SocialAccount

pytestmark = pytest.mark.django_db

TOKEN = "AQX-the-access-token-0123456789"
REFRESH = "AQR-the-refresh-token-9876543210"


@pytest.fixture
def account(world):
    return SocialAccount.objects.create(
        team=world.lyon, network="mastodon", name="Lyon Mastodon", validated=True,
        settings={"instance": "https://mastodon.example"},
    )  # fmt: skip


def store(account, actor, token=TOKEN, refresh=REFRESH):
    return health.save_credential(
        account,
        oauth.Tokens(access_token=token, refresh_token=refresh, external_account_id="109"),
        actor=actor,
        via="token entry",
    )


def test_round_trip_with_a_fernet_key_a_passphrase_or_the_derived_key(settings):
    for key in (Fernet.generate_key().decode(), "a long passphrase, stretched", ""):
        settings.REVIEWFLOW = {**settings.REVIEWFLOW, "CREDENTIALS_KEY": key}
        encrypted = secrets.encrypt(TOKEN)
        assert TOKEN not in encrypted
        assert secrets.decrypt(encrypted) == TOKEN
        assert secrets.encrypt(TOKEN) != encrypted  # a fresh IV each time


def test_the_database_holds_only_ciphertext(world, account):
    credential = store(account, world.carla)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT * FROM {AccountCredential._meta.db_table} WHERE id = %s", [credential.pk]
        )
        row = " ".join(str(value) for value in cursor.fetchone())
    assert TOKEN not in row and REFRESH not in row
    assert "the-access-token" not in row
    fresh = AccountCredential.objects.get(pk=credential.pk)
    assert fresh.access_token == TOKEN and fresh.refresh_token == REFRESH


def test_a_changed_key_says_so_and_the_check_asks_to_reconnect(world, account, settings):
    store(account, world.carla)
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "CREDENTIALS_KEY": Fernet.generate_key().decode()}
    credential = AccountCredential.objects.get(account=account)
    with pytest.raises(ValueError) as unreadable:
        credential.access_token  # noqa: B018
    assert str(unreadable.value) == (
        "A stored credential cannot be decrypted: REVIEWFLOW_CREDENTIALS_KEY changed. "
        "Reconnect the account."
    )
    credential = health.check_account(account)
    assert credential.status == AccountCredential.Status.RECONNECT
    assert "REVIEWFLOW_CREDENTIALS_KEY changed" in credential.status_detail


def test_the_admin_never_renders_a_token(client, world, account):
    credential = store(account, world.carla)
    encrypted = AccountCredential.objects.get(pk=credential.pk).access_token_encrypted
    client.force_login(world.carla)
    pages = [
        reverse("admin:approvals_socialaccount_changelist"),
        reverse("admin:approvals_socialaccount_change", args=[account.pk]),
        reverse("admin:approvals_socialaccount_connect", args=[account.pk]),
        reverse("admin:approvals_accountcredential_changelist"),
        reverse("admin:approvals_accountcredential_change", args=[credential.pk]),
        reverse("admin:approvals_accountcredential_delete", args=[credential.pk]),
        reverse("admin:approvals_ledgerentry_changelist"),
        reverse("admin:approvals_socialaccount_history", args=[account.pk]),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        for secret in (TOKEN, REFRESH, encrypted, encrypted[:40]):
            assert secret not in page, url
    credential_page = client.get(pages[4]).content.decode()
    assert "109" in credential_page and "Not checked yet" in credential_page


def test_a_refused_token_form_does_not_echo_the_token(client, world, account):
    client.force_login(world.carla)
    response = client.post(
        reverse("admin:approvals_socialaccount_connect", args=[account.pk]),
        {
            "action": "token",
            "token-access_token": TOKEN,
            "token-refresh_token": REFRESH,
            "token-expires_at": "not a date",
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Enter a valid date/time" in page
    assert TOKEN not in page and REFRESH not in page
    assert page.count('type="password"') == 2
    assert not AccountCredential.objects.exists()


def test_credentials_cannot_be_added_or_edited_in_the_admin(client, world, account):
    credential = store(account, world.carla)
    client.force_login(world.carla)
    assert client.get(reverse("admin:approvals_accountcredential_add")).status_code == 403
    response = client.post(
        reverse("admin:approvals_accountcredential_change", args=[credential.pk]),
        {"access_token_encrypted": "x", "status": "ok"},
    )
    assert response.status_code == 403
    assert AccountCredential.objects.get(pk=credential.pk).access_token == TOKEN


def test_credential_changes_are_ledgered_without_the_secret(client, world, account):
    store(account, world.carla)
    store(account, world.carla, token="second-token-value", refresh="")
    client.force_login(world.carla)
    credential = AccountCredential.objects.get(account=account)
    response = client.post(
        reverse("admin:approvals_accountcredential_delete", args=[credential.pk]),
        {"post": "yes"},
    )
    assert response.status_code == 302
    assert not AccountCredential.objects.exists()
    assert SocialAccount.objects.filter(pk=account.pk).exists()

    entries = list(LedgerEntry.objects.filter(event__startswith="admin.accountcredential"))
    assert [entry.event for entry in entries] == [
        "admin.accountcredential.set",
        "admin.accountcredential.replaced",
        "admin.accountcredential.removed",
    ]
    assert [entry.payload["what"] for entry in entries] == [
        "credential set",
        "credential replaced",
        "credential removed",
    ]
    assert all(
        entry.actor == "carla" and entry.payload["object_id"] == account.pk for entry in entries
    )
    assert (
        entries[0].payload["refresh_token"] is True and entries[1].payload["refresh_token"] is False
    )
    everything = json.dumps(list(LedgerEntry.objects.values("payload")))
    for secret in (TOKEN, REFRESH, "second-token-value"):
        assert secret not in everything


def test_deploy_check_warns_without_a_credentials_key(settings):
    settings.DEBUG = False
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "CREDENTIALS_KEY": ""}
    [warning] = checks.check_credentials_key(None)
    assert warning.id == "approvals.W003"
    assert "rotating SECRET_KEY would make every stored token unreadable" in warning.msg
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "CREDENTIALS_KEY": Fernet.generate_key().decode()}
    assert checks.check_credentials_key(None) == []
    settings.DEBUG, settings.REVIEWFLOW = True, {**settings.REVIEWFLOW, "CREDENTIALS_KEY": ""}
    assert checks.check_credentials_key(None) == []
