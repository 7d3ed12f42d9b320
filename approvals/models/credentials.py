from django.db import models

from approvals.secrets import decrypt, encrypt


class AccountCredential(models.Model):
    """A social account's access token, encrypted at rest and never shown again after entry."""

    class Status(models.TextChoices):
        UNCHECKED = "unchecked", "Not checked yet"
        OK = "ok", "Working"
        RECONNECT = "reconnect", "Reconnect needed"

    account = models.OneToOneField(
        "approvals.SocialAccount", on_delete=models.CASCADE, related_name="credential"
    )
    access_token_encrypted = models.TextField()
    refresh_token_encrypted = models.TextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Network-specific identifiers the API needs (LinkedIn author URN, Facebook page id...).
    external_account_id = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UNCHECKED)
    status_detail = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"credential of {self.account}"

    @property
    def access_token(self):
        return decrypt(self.access_token_encrypted)

    @access_token.setter
    def access_token(self, value):
        self.access_token_encrypted = encrypt(value)

    @property
    def refresh_token(self):
        return decrypt(self.refresh_token_encrypted) if self.refresh_token_encrypted else ""

    @refresh_token.setter
    def refresh_token(self, value):
        self.refresh_token_encrypted = encrypt(value) if value else ""
