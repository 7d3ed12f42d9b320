import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewflow.settings")

app = Celery("reviewflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# A worker's database connections live as a web request's do: kept for the next task up to
# DATABASE_CONN_MAX_AGE, checked before reuse. Celery's Django fix-up would close them around every
# task (celery#9824): a new connection, a cold server process and no prepared statement for each
# delivery (README, "Throughput"). CELERY_DB_REUSE_MAX (settings) moves it out of the way.
@signals.task_prerun.connect
def _as_a_request_starts(task=None, **kwargs):
    if not _eager(task):
        from django.db import close_old_connections

        close_old_connections()


@signals.task_postrun.connect
def _as_a_request_ends(task=None, state=None, **kwargs):
    if _eager(task):
        return
    from django.db import close_old_connections, connections

    if state == "SUCCESS":
        close_old_connections()
    else:
        # A task cut short (an exception, a time limit's signal mid-query) may leave its
        # connection unusable in a way Django cannot see: the next task gets a new one.
        connections.close_all()


def _eager(task):
    """Run in the caller's process (tests, benchmarks): its connection is the caller's."""
    return task is None or getattr(task.request, "is_eager", False)
