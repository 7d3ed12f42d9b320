from django.contrib import messages
from django.shortcuts import redirect, render


def render_partial_or_page(request, page, partial, context, status=200):
    """HTMX requests get the partial; everyone else the whole page."""
    return render(request, partial if request.htmx else page, context, status=status)


def refused(request, error, post=None):
    """A WorkflowError as a page with its message and status (4xx); nothing was changed."""
    return render(
        request,
        "approvals/refused.html",
        {"message": error.message, "post": post},
        status=error.status,
    )


def done(request, message, post):
    messages.success(request, message)
    return redirect("post_detail", pk=post.pk)
