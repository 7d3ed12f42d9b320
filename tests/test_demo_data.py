from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from approvals import ledger
from approvals.models import LedgerEntry, Post, Publication, SandboxPost, Team


def counts():
    return {
        model.__name__: model.objects.count()
        for model in (get_user_model(), Team, Post, Publication, SandboxPost, LedgerEntry)
    }


@pytest.mark.django_db
def test_demo_data_is_complete_and_idempotent(django_capture_on_commit_callbacks):
    out = StringIO()
    # The approved post is released with its approval and delivered on commit; run those
    # callbacks as a real commit would.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("demo_data", stdout=out)
    first = counts()

    again = StringIO()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        call_command("demo_data", stdout=again)
    assert callbacks == []
    assert counts() == first
    assert "demo data already present" in again.getvalue()

    User = get_user_model()
    usernames = {"alice", "bruno", "rita", "sam", "carla"}
    assert usernames <= set(User.objects.values_list("username", flat=True))
    for name in usernames:
        assert User.objects.get(username=name).check_password("demo")
    for output in (out.getvalue(), again.getvalue()):
        assert "Logins (password: demo):" in output
        assert all(name in output for name in usernames)

    assert set(Team.objects.values_list("name", flat=True)) == {"Lyon branch", "Paris branch"}
    lyon, paris = Team.objects.get(name="Lyon branch"), Team.objects.get(name="Paris branch")
    rita, sam = User.objects.get(username="rita"), User.objects.get(username="sam")
    assert rita.has_perm("approvals.review_team", lyon)
    assert rita.has_perm("approvals.review_team", paris)
    assert sam.has_perm("approvals.review_team", lyon)
    assert not sam.has_perm("approvals.review_team", paris)
    carla = User.objects.get(username="carla")
    assert carla.is_staff and not carla.is_superuser
    assert carla.has_perm("approvals.oversee_posts")
    assert carla.has_perm("approvals.view_ledgerentry")
    assert not carla.has_perm("approvals.change_ledgerentry")
    assert not carla.has_perm("approvals.delete_ledgerentry")
    assert carla.has_perm("approvals.delete_ledgerexport")  # a copy's file, not the ledger

    states = set(Post.objects.values_list("state", flat=True))
    assert len(states) >= 4, states
    published = Post.objects.filter(state="published")
    assert published.exists()
    publication = Publication.objects.get(post__in=published)
    assert publication.state == Publication.State.DELIVERED
    assert SandboxPost.objects.filter(idempotency_key=publication.idempotency_key).exists()

    assert ledger.verify() is None
