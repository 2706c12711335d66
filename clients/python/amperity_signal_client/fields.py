"""The error of a field of an event, how errors name a value's type, whole-number options."""

from __future__ import annotations


class EventFieldError(ValueError):
    """A Datafly JSON event has a field of the wrong type or value.

    Attributes:
        field: The path of the field, camelCase as in the JSON, e.g. ``context.consent``.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


def type_name(value: object) -> str:
    """What an error calls the type of ``value``: ``None``, ``int``, ``bytes`` and so on."""
    return "None" if value is None else type(value).__name__


def check_whole_number(label: str, value: object, wanted: str, low: int, high: int) -> int:
    """``value`` when it is an ``int`` (not a ``bool``) from ``low`` to ``high``.

    Raises:
        TypeError: When it is no ``int``: "``label`` must be ``wanted``, not float."
        ValueError: When it is out of range: "``label`` must be ``wanted``; got -1."
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{label} must be {wanted}, not {type_name(value)}.")
    if not low <= value <= high:
        raise ValueError(f"{label} must be {wanted}; got {value!r}.")
    return value
