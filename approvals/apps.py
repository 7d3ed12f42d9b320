from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "ReviewFlow"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
