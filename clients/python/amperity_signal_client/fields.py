"""The error of a field of an event, and how errors name a value's type."""

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
