from django.shortcuts import get_object_or_404, render

from approvals.models import SandboxPost, SocialAccount


def sandbox_feed(request, account_id):
    """The built-in network's public feed for one account, rendered as a network would."""
    account = get_object_or_404(SocialAccount, pk=account_id, network="sandbox")
    posts = SandboxPost.objects.filter(account=account, retracted_at__isnull=True)[:100]
    return render(request, "approvals/sandbox_feed.html", {"account": account, "posts": posts})


def sandbox_index(request):
    accounts = SocialAccount.objects.filter(network="sandbox")
    return render(request, "approvals/sandbox_index.html", {"accounts": accounts})
