"""Settings come from the environment, fail loudly on bad values, and pass the deploy check."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "reviewflow.settings",
    "DEBUG": "0",
    "SECRET_KEY": "x7#kq!v2@pZ9r$Lm4&nW8^tB1*cY6(eH3)jU5+fA0-gS9=dR2_oI7~uE4",
    "ALLOWED_HOSTS": "reviewflow.example.com",
    "DATABASE_URL": "sqlite:///:memory:",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "REVIEWFLOW_CREDENTIALS_KEY": "kYp2s6v9y$B&E)H@McQfTjWnZr4u7x!A",
}


def manage(*args, **env):
    test_only = {"REVIEWFLOW_VAR_DIR", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    base = {k: v for k, v in os.environ.items() if k not in PRODUCTION and k not in test_only}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_values():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_missing_secret_key_in_production_fails_loudly():
    env = {**PRODUCTION, "SECRET_KEY": ""}
    result = manage("check", **env)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


@pytest.mark.parametrize("name,value", [("DEBUG", "perhaps"), ("DATABASE_CONN_MAX_AGE", "ten")])
def test_malformed_values_are_named(name, value):
    result = manage("check", **{**PRODUCTION, name: value})
    assert result.returncode != 0
    assert name in result.stderr


def test_a_database_url_of_no_known_kind_is_refused_and_an_empty_one_is_the_default(tmp_path):
    result = manage("check", **{**PRODUCTION, "DATABASE_URL": "postgress://db/reviewflow"})
    assert result.returncode != 0
    assert "DATABASE_URL must be a URL such as postgres://" in result.stderr
    assert "Scheme 'postgress://' is unknown" in result.stderr
    empty = {**PRODUCTION, "DATABASE_URL": "", "REVIEWFLOW_VAR_DIR": str(tmp_path)}
    result = manage("check", **empty)
    assert result.returncode == 0, result.stderr


def test_a_negative_mail_burst_period_is_refused():
    result = manage("check", **{**PRODUCTION, "REVIEWFLOW_MAIL_BURST_SECONDS": "-5"})
    assert result.returncode != 0
    assert "REVIEWFLOW_MAIL_BURST_SECONDS must be 0 (off) or more" in result.stderr


def test_settings_read_database_and_broker_from_environment():
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'],"
        " s.CELERY_BROKER_URL, s.ALLOWED_HOSTS, s.DEBUG)"
    )
    env = {
        **PRODUCTION,
        "DATABASE_URL": "postgres://rf:pw@db.internal:5432/reviewflow",
    }
    result = manage("shell", "--no-imports", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "reviewflow",
        "redis://127.0.0.1:6379/0",
        "['reviewflow.example.com']",
        "False",
    ]


def test_defaults_need_no_server(tmp_path):
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['NAME'], s.CELERY_BROKER_URL)"
    )
    result = manage(
        "shell", "--no-imports", "-c", code, DEBUG="1", REVIEWFLOW_VAR_DIR=str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "reviewflow.sqlite3"), "filesystem://"]


def test_a_fresh_checkout_runs_management_commands_without_configuration(tmp_path):
    """No SECRET_KEY and no DEBUG: a developer's checkout, so manage.py runs as development."""
    result = manage("makemigrations", "--check", "--dry-run", REVIEWFLOW_VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


@pytest.mark.parametrize(
    "flag, expected", [(None, ["True", "5"]), ("0", ["True", "None"])], ids=["default", "off"]
)
def test_postgresql_prepares_statements_unless_told_not_to(flag, expected):
    """Behind a PgBouncer in transaction mode, REVIEWFLOW_DB_PREPARED_STATEMENTS=0 turns it off;
    connections are kept between requests and tasks, checked before reuse."""
    code = (
        "from django.conf import settings as s; d = s.DATABASES['default'];"
        "print(d['OPTIONS']['server_side_binding'], d['OPTIONS']['prepare_threshold'],"
        " d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])"
    )
    env = {**PRODUCTION, "DATABASE_URL": "postgres://rf:pw@db.internal:5432/reviewflow"}
    if flag is not None:
        env["REVIEWFLOW_DB_PREPARED_STATEMENTS"] = flag
    result = manage("shell", "--no-imports", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [*expected, "600", "True"]


@pytest.mark.parametrize(
    "url_options, flag, expected",
    [
        ("", None, "-c jit=off"),
        ("", "1", None),
        ("?options=-c%20statement_timeout%3D5000", None, "-c statement_timeout=5000 -c jit=off"),
    ],
    ids=["default", "on", "beside-the-url's"],
)
def test_postgresql_jit_is_off_unless_told_otherwise(url_options, flag, expected):
    """PostgreSQL's JIT compiled the beat's sweeps at every run (README, "Throughput");
    REVIEWFLOW_DB_JIT=1 leaves it to the server, and options given in DATABASE_URL are kept."""
    code = (
        "from django.conf import settings as s;"
        "print(repr(s.DATABASES['default']['OPTIONS'].get('options')))"
    )
    env = {**PRODUCTION, "DATABASE_URL": f"postgres://rf:pw@db.internal:5432/rf{url_options}"}
    if flag is not None:
        env["REVIEWFLOW_DB_JIT"] = flag
    result = manage("shell", "--no-imports", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr(expected)


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_connections_run_without_jit():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgresql_prepares_a_statement_run_again_and_again():
    from django.db import connection

    from approvals.models import Post

    def prepared():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            return cursor.fetchone()[0]

    before = prepared()
    for pk in range(6):
        assert not Post.objects.filter(pk=-pk - 1).exists()
    assert prepared() > before
