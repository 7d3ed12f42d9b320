"""Release throughput: 1,000 approved posts through one worker process to a local receiver.

Run by `make bench` (after the queue and policy benchmarks, on the queue's database) or alone:
`python -m benchmarks.release` (which drops and recreates the DATABASE_URL database, whose name
must contain "bench"). Needs PostgreSQL and a `redis-server` binary: the broker is a private
redis-server on a free port, started and stopped here, so nothing else's messages mix in.

The posts go through the workflow (created, submitted, approved: each approval releases its post
in the same transaction); each post's delivery task waits in the broker until one Celery worker
process (solo pool, every queue, as `make run`) is started; it delivers each publication to a
local Standard Webhooks receiver (tests/faultkit.py: verifies the signature, drops repeated
webhook-ids, answers 200).
Then, in the same run, a bare loop sends as many signed POSTs of the same body to the same
receiver with `requests.post` and no Session: a new connection per post (the connectors keep
theirs alive from one post to the next, `connectors.http.session`).
Then the same again over TLS, as every network is reached: the receiver answers HTTPS with a
self-signed certificate that the worker and the loop trust.

Figures, one line each on stdout (progress goes to stderr):
  BENCH release_throughput    posts/s, from the worker's first claim to the last delivery
                              recorded (database timestamps: the first Publication.claimed_at,
                              the last Publication.delivered_at)
  BENCH bare_http_throughput  posts/s of the bare loop
  BENCH release_vs_bare_http  the first over the second (1.0 would mean the worker's bookkeeping
                              costs nothing beside the HTTP call itself)
  BENCH release_tls_throughput, bare_https_throughput  the same two over TLS (the bare loop
                              pays a TLS handshake for every post; the worker, one per connection)

Knobs (environment): BENCH_RELEASE_POSTS (1000), BENCH_RELEASE_DEADLINE (120 s).
"""

import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from .queue import DEFAULT_DATABASE_URL, bench, log, recreate_database

POSTS = int(os.environ.get("BENCH_RELEASE_POSTS", "1000"))
DEADLINE = float(os.environ.get("BENCH_RELEASE_DEADLINE", "120"))
TEXT = "Portes ouvertes samedi à l'agence {n} : nos conseillers vous attendent de 9 h à 17 h."


def make_world(receiver_url):
    """An advisor, a reviewer and a webhook account of their own team, pointing at the receiver."""
    from django.contrib.auth.models import Group, User
    from guardian.shortcuts import assign_perm

    from approvals.models import Membership, SocialAccount, Team

    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    team = Team.objects.create(name=f"Release bench {stamp}")
    # No email addresses: no notification tasks share the worker with the release.
    advisor = User.objects.create_user(f"release_advisor_{stamp}")
    reviewer = User.objects.create_user(f"release_reviewer_{stamp}")
    Membership.objects.create(user=advisor, team=team)
    assign_perm("approvals.review_team", reviewer, team)
    reviewer.groups.add(Group.objects.get(name="Compliance reviewers"))  # migration 0003's route
    account = SocialAccount(
        team=team,
        network="webhook",
        name="Release bench receiver",
        handle="@bench",
        settings={"url": receiver_url, "secret": ""},
        validated=True,
    )
    account.full_clean()  # generates the whsec_ secret
    account.save()
    return advisor, reviewer, account


def approve(advisor, reviewer, account, count):
    from approvals import workflow

    ids = []
    for n in range(count):
        post = workflow.create_post(advisor, text=TEXT.format(n=n), account_ids=[account.pk])
        workflow.submit(post.pk, advisor)
        workflow.decide(
            post.pk, reviewer, outcome="approve", revision_hash=post.current_revision.content_hash
        )
        ids.append(post.pk)
    return ids


def wait_published(post_ids, worker):
    from django.db.models import Count

    from approvals.models import Post
    from approvals.models.posts import State

    deadline = time.monotonic() + DEADLINE
    done = 0
    while time.monotonic() < deadline and worker.alive:
        done = Post.objects.filter(pk__in=post_ids, state=State.PUBLISHED).count()
        if done == len(post_ids):
            return
        time.sleep(0.5)
    states = dict(
        Post.objects.filter(pk__in=post_ids).order_by().values_list("state").annotate(n=Count("pk"))
    )
    raise SystemExit(
        f"release benchmark: {done} of {len(post_ids)} posts published in {DEADLINE:.0f} s "
        f"(worker {'alive' if worker.alive else 'dead'}; states {states}); "
        f"see {worker.log_path}:\n{worker.log_tail(4000)}"
    )


def release_seconds(post_ids):
    from django.db.models import Max, Min

    from approvals.models import Publication

    times = Publication.objects.filter(post_id__in=post_ids).aggregate(
        first=Min("claimed_at"), last=Max("delivered_at")
    )
    return (times["last"] - times["first"]).total_seconds()


def bare_loop(receiver, secret, body, count, verify=True):
    """`count` signed POSTs of `body`, one after the other, each on a new connection;
    `verify`: as requests takes it (the receiver's certificate file, over TLS)."""
    import requests
    from standardwebhooks.webhooks import Webhook

    signer = Webhook(secret)
    text = body.decode()
    started = time.perf_counter()
    for n in range(count):
        msg_id = f"msg_bare_{n:06d}"
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "ReviewFlow-Bench/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(msg_id, now, text),
        }
        response = requests.post(
            receiver.url,
            data=body,
            headers=headers,
            timeout=10,
            allow_redirects=False,
            verify=verify,
        )
        if response.status_code != 200:
            raise SystemExit(f"bare loop: HTTP {response.status_code}: {response.text[:200]}")
    return time.perf_counter() - started


def run(workdir, redis, tls=None):
    """(released posts/s, bare posts/s) through one receiver, over TLS when `tls` is given (its
    certificate trusted by the worker through REQUESTS_CA_BUNDLE, by the bare loop directly)."""
    from django.db import connection

    from reviewflow.celery import app
    from tests.faultkit import CountingReceiver, broker, database_url, service_env, worker

    scheme = "https" if tls else "http"
    trust, verify = ({"REQUESTS_CA_BUNDLE": tls[0]}, {"verify": tls[0]}) if tls else ({}, {})
    with CountingReceiver(tls=tls) as receiver:
        advisor, reviewer, account = make_world(receiver.url)
        receiver.secret = account.settings["secret"]
        started = time.perf_counter()
        with broker(app, redis.url()):
            post_ids = approve(advisor, reviewer, account, POSTS)
        log(f"release ({scheme}): {POSTS} posts approved in {time.perf_counter() - started:.1f} s")

        env = service_env(
            redis.url(), database_url(connection), REVIEWFLOW_ALLOW_PRIVATE_NETWORKS=1, **trust
        )
        the_worker = worker(env, workdir / f"worker-{scheme}.log", name="release-bench").start()
        try:
            wait_published(post_ids, the_worker)
        finally:
            the_worker.stop()
        release = release_seconds(post_ids)
        if receiver.distinct != POSTS or receiver.doubled or receiver.rejected:
            sys.exit(
                f"release benchmark: the receiver processed {receiver.distinct} of {POSTS} "
                f"(doubled {receiver.doubled}, rejected {receiver.rejected}: {receiver.errors})"
            )
        log(
            f"release ({scheme}): {POSTS} posts released and delivered in {release:.1f} s "
            f"({receiver.requests} requests, {receiver.duplicates_dropped} duplicates dropped)"
        )

        body = receiver.sample_body
        receiver.reset()
        bare = bare_loop(receiver, account.settings["secret"], body, POSTS, **verify)
        if receiver.distinct != POSTS:
            sys.exit(f"bare loop: the receiver processed {receiver.distinct} of {POSTS}")
        log(f"bare loop ({scheme}): {POSTS} POSTs of {len(body)} bytes in {bare:.1f} s")
    return POSTS / release, POSTS / bare


def main(recreate=True):
    url = os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    if recreate:
        recreate_database(url)

    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        sys.exit(f"The release benchmark needs PostgreSQL; DATABASE_URL is {url!r}.")
    call_command("migrate", verbosity=0)

    from tests.faultkit import RedisServer
    from tests.localserver import self_signed_certificate

    workdir = Path(tempfile.mkdtemp(prefix="release-bench-"))
    with RedisServer(workdir) as redis:
        release_rate, bare_rate = run(workdir, redis)
        tls_rate, bare_tls_rate = run(workdir, redis, tls=self_signed_certificate(workdir))
    bench("release_throughput", f"{release_rate:.1f}", "posts/s")
    bench("bare_http_throughput", f"{bare_rate:.1f}", "posts/s")
    bench("release_vs_bare_http", f"{release_rate / bare_rate:.3f}", "ratio")
    bench("release_tls_throughput", f"{tls_rate:.1f}", "posts/s")
    bench("bare_https_throughput", f"{bare_tls_rate:.1f}", "posts/s")


if __name__ == "__main__":
    main()
