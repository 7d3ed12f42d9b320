from django import forms
from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.core.validators import MaxLengthValidator
from django.utils import timezone

from . import media
from .models import SocialAccount, Tag

KEPT_IMAGE_MAX_AGE = 24 * 3600  # seconds an image chosen in a refused try waits for the next


class AccountChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, account):
        handle = f" {account.handle}" if account.handle else ""
        return f"{account.name}{handle} · {account.connector.label}"


class PostForm(forms.Form):
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text="Plain text. Links are made clickable when shown.",
    )
    link = forms.URLField(
        required=False,
        max_length=2000,
        assume_scheme="https",
        help_text="Optional link shared with the post.",
    )
    accounts = AccountChoiceField(
        queryset=SocialAccount.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        label="Publish to",
        error_messages={
            "invalid_choice": "One of the chosen accounts is not one you may publish to.",
            "invalid_pk_value": "One of the chosen accounts is not one you may publish to.",
            "required": "Choose at least one account to publish to.",
        },
    )
    tags = forms.ModelMultipleChoiceField(
        queryset=Tag.objects.all(),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="Tags",
        help_text="Product or campaign: approval rules may route tagged posts to more reviewers.",
        error_messages={
            "invalid_choice": "One of the chosen tags does not exist.",
            "invalid_pk_value": "One of the chosen tags does not exist.",
        },
    )
    image = forms.FileField(
        required=False,
        label="Image",
        widget=forms.FileInput(attrs={"accept": "image/png,image/jpeg,image/gif,image/webp"}),
        help_text="Optional: one PNG, JPEG, GIF or WebP image, approved with the text.",
    )
    remove_image = forms.BooleanField(required=False, label="Remove the image")
    # Browsers empty a file input when a form comes back with errors: the image chosen in that
    # try is stored and named here, signed for its author, so it is not lost (see keep_image).
    kept_image = forms.CharField(required=False, widget=forms.HiddenInput)
    publish_at = forms.DateTimeField(
        required=False,
        label="Publish at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="In your timezone. Leave empty to publish as soon as it is approved.",
    )
    comment = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Note to reviewers",
        max_length=2000,
        help_text="Optional: goes with “Submit for review”, in the post's timeline.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.kept = None  # {"token", "name", "filename"} of the image kept from a refused try
        self.fields["accounts"].queryset = SocialAccount.objects.usable_by(user)
        self.fields["text"].validators.append(
            MaxLengthValidator(settings.REVIEWFLOW["MAX_POST_LENGTH"])
        )

    def clean_publish_at(self):
        value = self.cleaned_data["publish_at"]
        if value and value < timezone.now():
            raise forms.ValidationError(
                "This time has passed. Choose a later one, "
                "or leave it empty to publish once approved."
            )
        return value

    @property
    def workflow_kwargs(self):
        data = self.cleaned_data
        return {
            "text": data["text"],
            "link": data["link"],
            "account_ids": [a.pk for a in data["accounts"]],
            "tag_ids": [t.pk for t in data["tags"]],
            "publish_at": data["publish_at"],
        }

    def clean(self):
        data = super().clean()
        token = data.get("kept_image")
        if token and not data.get("image") and not data.get("remove_image"):
            if (kept := read_kept_image(token, self.user)) is None:
                self.add_error(
                    "image", "The image you chose before is no longer available: choose it again."
                )
            else:
                self.kept = {"token": token, **kept}
        return data

    def image_choice(self, keep):
        """For the workflow: a new upload (or the one kept from a refused try), None to remove,
        or `keep` to keep the current one."""
        if self.cleaned_data.get("image"):
            return self.cleaned_data["image"]
        if self.cleaned_data.get("remove_image"):
            return None
        return default_storage.open(self.kept["name"]) if self.kept else keep

    def keep_image(self):
        """The form goes back to its author: store the image chosen in this try, so that the
        form shown again holds it (the workflow checks it again when it is sent)."""
        upload = self.cleaned_data.get("image")  # the view has called is_valid()
        if not upload or self.has_error("image"):
            return
        try:
            sha256 = media.check_image(upload)
        except ValueError as error:
            self.add_error("image", str(error))
            return
        kept = {"name": media.store_image(upload, sha256), "filename": upload.name}
        self.kept = {"token": signing.dumps(kept, salt=_kept_salt(self.user)), **kept}


def read_kept_image(token, user):
    """{"name": in storage, "filename": as chosen} of a token from PostForm.keep_image, for the
    user it was made for; None when the token is not valid, too old, or the file is gone."""
    try:
        kept = signing.loads(token, salt=_kept_salt(user), max_age=KEPT_IMAGE_MAX_AGE)
        return kept if default_storage.exists(kept["name"]) else None
    except (signing.BadSignature, KeyError, TypeError):
        return None


def _kept_salt(user):
    return f"approvals.kept-image.{user.pk}"  # a token serves only its author


class DecisionForm(forms.Form):
    outcome = forms.ChoiceField(
        choices=[
            ("approve", "Approve"),
            ("request_changes", "Request changes"),
            ("reject", "Reject"),
        ]
    )
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Reason",
        help_text="Required to request changes or reject; the author sees it.",
    )
    revision_hash = forms.CharField(widget=forms.HiddenInput)
    # The step the decision counts for, when the reviewer may decide on several; empty: the
    # workflow picks the one step waiting for them.
    step_id = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        if (
            data.get("outcome") in ("request_changes", "reject")
            and not data.get("reason", "").strip()
        ):
            self.add_error("reason", "Say why, so the author knows what to change.")
        return data


class ClaimForm(forms.Form):
    step_id = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)


class ReleaseClaimForm(forms.Form):
    claim_id = forms.IntegerField(min_value=1, widget=forms.HiddenInput)


class CommentForm(forms.Form):
    comment = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Note to reviewers",
        max_length=2000,
    )


class WithdrawForm(forms.Form):
    reason = forms.CharField(required=False, label="Why withdraw (optional)", max_length=2000)
