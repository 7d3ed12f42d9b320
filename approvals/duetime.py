"""Due times, in calendar hours or in business hours (REVIEWFLOW BUSINESS_DAYS/BUSINESS_HOURS)."""

from datetime import datetime, time, timedelta

from django.conf import settings
from django.utils import timezone


def _business_window():
    start, end = (time.fromisoformat(t) for t in settings.REVIEWFLOW["BUSINESS_HOURS"])
    return start, end, set(settings.REVIEWFLOW["BUSINESS_DAYS"])


def add_business_hours(start, hours):
    """The moment `hours` business hours after `start`, counted in the server's timezone."""
    open_at, close_at, days = _business_window()
    tz = timezone.get_default_timezone()
    moment = timezone.localtime(start, tz)
    left = timedelta(hours=hours)
    for _ in range(3660):  # ten years of days: a guard against an empty calendar
        day_open = datetime.combine(moment.date(), open_at, tz)
        day_close = datetime.combine(moment.date(), close_at, tz)
        if moment.weekday() in days and moment < day_close:
            moment = max(moment, day_open)
            if moment + left <= day_close:
                return moment + left
            left -= day_close - moment
        moment = datetime.combine(moment.date() + timedelta(days=1), open_at, tz)
    raise ValueError("REVIEWFLOW business hours leave no working time")


def due_at(start, hours, business_hours=False):
    if hours is None:
        return None
    if business_hours:
        return add_business_hours(start, hours)
    return start + timedelta(hours=hours)
