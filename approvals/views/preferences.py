from django import forms
from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from approvals.models import NotificationPreference


class NotificationPreferenceForm(forms.Form):
    mode = forms.ChoiceField(
        choices=NotificationPreference.Mode.choices,
        widget=forms.RadioSelect,
        label="Email me",
        error_messages={"invalid_choice": "Choose immediate emails or a daily digest."},
    )


@require_http_methods(["GET", "POST"])
def notification_preferences(request):
    """Immediate emails or one daily digest: the person's own choice."""
    current = NotificationPreference.mode_for(request.user)
    form = NotificationPreferenceForm(request.POST or None, initial={"mode": current})
    if request.method == "POST" and form.is_valid():
        mode = NotificationPreference.Mode(form.cleaned_data["mode"])
        NotificationPreference.objects.update_or_create(user=request.user, defaults={"mode": mode})
        messages.success(request, f"Saved: you will be emailed {mode.label.lower()}.")
        return redirect("notification_preferences")
    return render(
        request,
        "approvals/preferences.html",
        {
            "form": form,
            "digest_hour": settings.REVIEWFLOW["DIGEST_HOUR"],
            "burst_seconds": settings.REVIEWFLOW["MAIL_BURST_SECONDS"],
        },
        status=400 if request.method == "POST" else 200,
    )
