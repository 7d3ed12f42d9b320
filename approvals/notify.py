"""Notifications by email: what happened in the review, to whom it concerns."""


def steps_opened(step_ids):
    """A step became active: tell its reviewer group."""


def decision_made(decision_id):
    """A reviewer decided: tell the author."""
