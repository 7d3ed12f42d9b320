#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewflow.settings")
    if "SECRET_KEY" not in os.environ and "DEBUG" not in os.environ:
        # A checkout with no configuration is a developer's: production always sets SECRET_KEY
        # (and DEBUG=0), and gunicorn and Celery never come through here.
        os.environ["DEBUG"] = "1"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
