"""Test settings: the real settings, with what a test run needs set before they load."""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("REVIEWFLOW_MANIFEST_STATIC", "0")
# Tests run tasks in-process unless a test starts a real worker (tests/test_celery_worker.py).
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
os.environ.setdefault("REVIEWFLOW_WEBHOOK_TIMEOUT_SECONDS", "2")
# Test receivers and fake networks listen on loopback: the SSRF guard lets them through here
# (tests/test_ssrf.py turns it back on).
os.environ.setdefault("REVIEWFLOW_ALLOW_PRIVATE_NETWORKS", "1")

from reviewflow.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
ALLOWED_HOSTS = ["*"]
# Serve static files from the app folders, as runserver does; no collectstatic before tests.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
