"""ReviewFlow settings, all from environment variables (see README, "Configuration").

The defaults give a zero-setup development instance: a SQLite file and an embedded
(filesystem) Celery broker. Production sets DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY,
DEBUG=0 and ALLOWED_HOSTS.
"""

import os
import re
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("REVIEWFLOW_VAR_DIR", BASE_DIR / "var"))


def env_bool(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_int(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def env_float(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def env_int_list(name, default):
    try:
        return [int(item) for item in env_list(name, default)]
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be comma-separated integers") from None


def env_list(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def _rate_limits():
    limits = {
        "linkedin": "100/1m",
        "x": "50/15m",
        "facebook": "200/1h",
        "mastodon": "300/5m",
        "sandbox": None,
        "webhook": None,  # your own receiver: limit it here if it needs it
        "default": "300/1m",
    }
    for item in env_list("REVIEWFLOW_RATE_LIMITS", []):
        network, _, rate = item.partition("=")
        if not network.strip() or not rate.strip():
            raise ImproperlyConfigured(
                "REVIEWFLOW_RATE_LIMITS is network=rate pairs, e.g. x=50/15m,linkedin=100/1m"
            )
        rate = rate.strip()
        limits[network.strip()] = None if rate.lower() == "none" else rate
    for network, rate in limits.items():
        if rate is not None and not re.fullmatch(r"\s*[1-9]\d*\s*/\s*(\d*)\s*[smhd]\s*", rate):
            raise ImproperlyConfigured(
                f"Rate limit for {network} must be 'N/period' (e.g. 50/15m, 100/1m), not {rate!r}"
            )
    return limits


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG and not env_bool("REVIEWFLOW_INSECURE_DEV_KEY", False):
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it (50+ random characters), "
            "or run with DEBUG=1 for development."
        )
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "guardian",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "approvals.middleware.UserTimezoneMiddleware",
]

ROOT_URLCONF = "reviewflow.urls"
WSGI_APPLICATION = "reviewflow.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

try:
    DATABASES = {
        "default": dj_database_url.parse(
            # Unset or empty: the zero-setup SQLite file.
            os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'reviewflow.sqlite3'}",
            # Kept open between requests and tasks (a worker would otherwise connect for every
            # task, and lose its prepared statements), checked before reuse.
            conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 600),
            conn_health_checks=True,
        )
    }
except ValueError as error:  # dj_database_url's unknown scheme or malformed URL
    raise ImproperlyConfigured(
        f"DATABASE_URL must be a URL such as postgres://user:password@host:5432/name "
        f"or sqlite:///path/to/file ({error})"
    ) from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web app and the worker write to one file: take the write lock at BEGIN so
    # concurrent transactions wait for each other instead of failing half-way.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Parameters bound by the server, and each statement prepared once it has run a few times on
    # a connection: parsing and planning then happen once, not at every query (half the database
    # time of a review cycle, benchmarks/cycle.py). PgBouncer in transaction mode needs
    # max_prepared_statements (1.21+), or REVIEWFLOW_DB_PREPARED_STATEMENTS=0.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True,
        prepare_threshold=5 if env_bool("REVIEWFLOW_DB_PREPARED_STATEMENTS", True) else None,
    )
    # PostgreSQL compiles a statement whose estimated cost is high (the beat's at-risk sweep over
    # every post in review) with LLVM at every run: about half of that sweep's time, for queries
    # that read a few thousand rows (README, "Throughput"). Off, unless REVIEWFLOW_DB_JIT=1.
    if not env_bool("REVIEWFLOW_DB_JIT", False):
        options = DATABASES["default"]["OPTIONS"]
        options["options"] = f"{options.get('options', '')} -c jit=off".strip()

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "approvals.access.UserWithTeamBackend",  # Django's ModelBackend, reading the user's team along
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
TIME_ZONE = os.environ.get("TIME_ZONE", "Europe/Paris")
USE_I18N = True
USE_TZ = True

MEDIA_URL = "media/"  # served through approvals' access check, never as public files
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG and env_bool("REVIEWFLOW_MANIFEST_STATIC", True)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "reviewflow@localhost")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# Well inside notify.SENDING_LEASE: a hung SMTP server cannot hold rows past their lease.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 60)

# Security: production values follow from DEBUG=0 (manage.py check --deploy is clean).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG and env_bool("SECURE_COOKIES", True)
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = not DEBUG and env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

# Celery. Without CELERY_BROKER_URL, an embedded filesystem broker under var/ needs no server.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
    }
else:
    # Keep below any countdown we use; see NOTES on redelivery after a killed worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 600)
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fix-up closes the database connection after every task, or after this many;
# reviewflow/celery.py keeps it as Django keeps a request's (DATABASE_CONN_MAX_AGE).
CELERY_DB_REUSE_MAX = 10_000
CELERY_TASK_ROUTES = {
    "approvals.tasks.deliver_publication": {"queue": "publishing"},
    "approvals.tasks.retract_publication": {"queue": "publishing"},
    "approvals.tasks.release_due_posts": {"queue": "maintenance"},
    "approvals.tasks.deliver_due_publications": {"queue": "maintenance"},
    "approvals.tasks.warn_expiring_approvals": {"queue": "maintenance"},
    "approvals.tasks.recover_stalled_publications": {"queue": "maintenance"},
    "approvals.tasks.escalate_overdue_steps": {"queue": "maintenance"},
    "approvals.tasks.flag_posts_at_risk": {"queue": "maintenance"},
    "approvals.tasks.export_ledger": {"queue": "maintenance"},
    "approvals.tasks.write_stalled_ledger_exports": {"queue": "maintenance"},
    "approvals.tasks.send_notifications": {"queue": "notifications"},
    "approvals.tasks.send_digests": {"queue": "notifications"},
    "approvals.tasks.send_gathered_notifications": {"queue": "notifications"},
}
CELERY_TASK_DEFAULT_QUEUE = "default"
_digest_hour = env_int("REVIEWFLOW_DIGEST_HOUR", 7)
if not 0 <= _digest_hour <= 23:
    raise ImproperlyConfigured("REVIEWFLOW_DIGEST_HOUR must be an hour between 0 and 23")
_mail_burst_seconds = env_int("REVIEWFLOW_MAIL_BURST_SECONDS", 60)
if _mail_burst_seconds < 0:
    raise ImproperlyConfigured("REVIEWFLOW_MAIL_BURST_SECONDS must be 0 (off) or more")
CELERY_BEAT_SCHEDULE = {
    "release-due-posts": {
        "task": "approvals.tasks.release_due_posts",
        "schedule": env_float("REVIEWFLOW_RELEASE_BEAT_SECONDS", 60.0),
    },
    # The outbox: (re)enqueue due publications and take-downs, so a lost message (a Redis restart
    # without persistence, a broker down at commit) only delays a delivery.
    "deliver-due-publications": {
        "task": "approvals.tasks.deliver_due_publications",
        "schedule": env_float("REVIEWFLOW_DELIVERY_BEAT_SECONDS", 30.0),
    },
    "recover-stalled-publications": {
        "task": "approvals.tasks.recover_stalled_publications",
        "schedule": env_float("REVIEWFLOW_RECOVER_STALLED_BEAT_SECONDS", 60.0),
    },
    "warn-expiring-approvals": {
        "task": "approvals.tasks.warn_expiring_approvals",
        "schedule": crontab(minute=5),  # hourly
    },
    "escalate-overdue-steps": {"task": "approvals.tasks.escalate_overdue_steps", "schedule": 60.0},
    "flag-posts-at-risk": {"task": "approvals.tasks.flag_posts_at_risk", "schedule": 60.0},
    # Ledger exports whose task was lost (ledger.EXPORT_STALLED_AFTER).
    "write-stalled-ledger-exports": {
        "task": "approvals.tasks.write_stalled_ledger_exports",
        "schedule": 300.0,
    },
    # Immediate notifications whose task was lost (broker down when they were written).
    "send-stalled-notifications": {"task": "approvals.tasks.send_notifications", "schedule": 300.0},
    # What a burst gathered for each person (notify.send_gathered): one mail each, per period.
    "send-gathered-notifications": {
        "task": "approvals.tasks.send_gathered_notifications",
        "schedule": float(_mail_burst_seconds or 60),
    },
    "send-digests": {
        "task": "approvals.tasks.send_digests",
        "schedule": crontab(minute=0, hour=_digest_hour),
    },
    # Expired or revoked network tokens found before a release fails (approvals/health.py).
    "check-account-credentials": {
        "task": "approvals.tasks.check_account_credentials",
        "schedule": 6 * 3600.0,
    },
}
# Beat reads crontab hours (the daily digest) in the server's timezone, not UTC.
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# ReviewFlow itself.
REVIEWFLOW = {
    # How long an approval stays valid before the content must be reviewed again.
    "APPROVAL_VALID_DAYS": env_int("REVIEWFLOW_APPROVAL_VALID_DAYS", 90),
    "MAX_POST_LENGTH": env_int("REVIEWFLOW_MAX_POST_LENGTH", 10000),
    "MAX_IMAGE_BYTES": env_int("REVIEWFLOW_MAX_IMAGE_BYTES", 5 * 1024 * 1024),
    # A publication claimed by a worker that has not reported back after this is retried
    # (with the same idempotency key, so a receiver can drop a duplicate).
    "DELIVERY_LEASE_SECONDS": env_int("REVIEWFLOW_DELIVERY_LEASE_SECONDS", 300),
    # A reviewer's claim on a step lapses after this many minutes without a decision.
    "CLAIM_MINUTES": env_int("REVIEWFLOW_CLAIM_MINUTES", 30),
    # Business hours for due times that count them: days (0=Monday) and hours, server timezone.
    "BUSINESS_DAYS": env_int_list("REVIEWFLOW_BUSINESS_DAYS", [0, 1, 2, 3, 4]),
    "BUSINESS_HOURS": env_list("REVIEWFLOW_BUSINESS_HOURS", ["09:00", "18:00"]),
    # Encryption key for network credentials at rest (see approvals/secrets.py).
    "CREDENTIALS_KEY": os.environ.get("REVIEWFLOW_CREDENTIALS_KEY", ""),
    # Outbound calls to private, loopback or link-local addresses are refused (SSRF) unless this
    # is on: tests and on-premises receivers set it.
    "ALLOW_PRIVATE_NETWORKS": env_bool("REVIEWFLOW_ALLOW_PRIVATE_NETWORKS", False),
    "HTTP_TIMEOUT_SECONDS": env_float("REVIEWFLOW_HTTP_TIMEOUT_SECONDS", 10),
    # Network API base URLs: settings, so tests and self-hosted networks can point elsewhere.
    "API_BASE_URLS": {
        "linkedin": os.environ.get("REVIEWFLOW_LINKEDIN_API", "https://api.linkedin.com"),
        "x": os.environ.get("REVIEWFLOW_X_API", "https://api.x.com"),
        "facebook": os.environ.get("REVIEWFLOW_FACEBOOK_API", "https://graph.facebook.com"),
    },
    # Delivery: attempts before a publication fails for good, and the backoff between them:
    # BACKOFF * 2**(attempt-1) with full jitter (0.5x to 1x), at most BACKOFF_MAX, or the
    # network's Retry-After when longer. Take-downs retry the same way.
    "DELIVERY_MAX_ATTEMPTS": env_int("REVIEWFLOW_DELIVERY_MAX_ATTEMPTS", 6),
    "DELIVERY_BACKOFF_SECONDS": env_float("REVIEWFLOW_DELIVERY_BACKOFF_SECONDS", 30),
    "DELIVERY_BACKOFF_MAX_SECONDS": env_float("REVIEWFLOW_DELIVERY_BACKOFF_MAX_SECONDS", 3600),
    # Waits up to this long are a Celery countdown; longer ones wait for the beat
    # (deliver_due_publications). Keep it well below the broker's visibility timeout.
    "DELIVERY_COUNTDOWN_MAX_SECONDS": env_float("REVIEWFLOW_DELIVERY_COUNTDOWN_MAX_SECONDS", 50),
    # The beat enqueues a due publication again when its last message is older than this
    # (the message was lost); a duplicate message is harmless (the claim refuses it).
    "DELIVERY_RESEND_SECONDS": env_float("REVIEWFLOW_DELIVERY_RESEND_SECONDS", 120),
    "WEBHOOK_TIMEOUT_SECONDS": env_float("REVIEWFLOW_WEBHOOK_TIMEOUT_SECONDS", 10),
    # Calls per network shared by all workers ("N/period", period in s, m, h or d, e.g. 15m);
    # "default" for networks not listed, None for no limit. REVIEWFLOW_RATE_LIMITS overrides
    # or adds entries: "x=50/15m,linkedin=100/1m,webhook=none".
    "RATE_LIMITS": _rate_limits(),
    # The shared rate-limit buckets live here (the broker's Redis by default); without a Redis
    # URL each process limits itself.
    "REDIS_URL": os.environ.get(
        "REVIEWFLOW_REDIS_URL",
        CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "",
    ),
    "RATE_LIMIT_KEY_PREFIX": os.environ.get(
        "REVIEWFLOW_RATE_LIMIT_KEY_PREFIX", "reviewflow:ratelimit:"
    ),
    # The author is warned this many days before an unreleased approval expires.
    "EXPIRY_WARNING_DAYS": env_int("REVIEWFLOW_EXPIRY_WARNING_DAYS", 3),
    # A publication whose worker vanished this many times is failed for a person to look at,
    # so a delivery that kills workers (or cannot be recorded) never loops forever.
    "DELIVERY_MAX_CLAIMS": env_int("REVIEWFLOW_DELIVERY_MAX_CLAIMS", 5),
    # Where people open ReviewFlow: the links in notification emails start with it.
    "BASE_URL": os.environ.get("REVIEWFLOW_BASE_URL", "http://127.0.0.1:8000"),
    # A post in review is flagged (author and reviewers told) when its route cannot finish
    # before its publish time, or when that time is less than this many minutes away.
    "AT_RISK_MARGIN_MINUTES": env_int("REVIEWFLOW_AT_RISK_MARGIN_MINUTES", 60),
    # The hour (server timezone) at which digest emails go out, for those who chose them.
    "DIGEST_HOUR": _digest_hour,
    # A person emailed less than this many seconds ago gets what follows gathered: one mail per
    # period while a burst lasts (a campaign of posts), not one per event. 0: one mail per event.
    "MAIL_BURST_SECONDS": _mail_burst_seconds,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
