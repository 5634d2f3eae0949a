"""Piecewise-linear schedules in fairseq's syntax (``"0:1,20000:0.1"``, or a constant), checked.

fairseq's ``PiecewiseLinearFn`` accepts repeated update numbers (``"0:1,100:1,100:0.5"``) and
then divides by zero when training reaches that update; here the update numbers must increase
strictly, and a bad string is reported with the flag that carried it.
"""
from fairseq.tasks.online_backtranslation import PiecewiseLinearFn

from .errors import SmallcapError


class ScheduleError(SmallcapError, ValueError):
    """A schedule string that cannot be parsed or whose update numbers do not increase."""


def parse_schedule(text: str, flag: str) -> PiecewiseLinearFn:
    try:
        schedule = PiecewiseLinearFn.from_string(text)
    except (ValueError, AssertionError):
        schedule = None
    updates = [x for x, _ in schedule.pieces] if schedule is not None else []
    if schedule is None or any(b <= a for a, b in zip(updates, updates[1:])):
        raise ScheduleError(f"{flag} {text!r}: expected a number or 'update:value' pairs with "
                            "strictly increasing updates, such as '0:1,20000:0.1'")
    return schedule
