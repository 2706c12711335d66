"""The one error the blueprint engine raises on purpose."""

from __future__ import annotations

from amperity_signal.errors import AmperitySignalError


class BlueprintError(AmperitySignalError, ValueError):
    """A blueprint file or an integration's blueprint overrides cannot be used.

    The message names the file (or ``overrides``), the mapping or handler at fault and
    what to change. It is a ``ValueError`` too, so pydantic validators that load a
    blueprint turn it into an ordinary validation error.
    """

    reason = "INVALID_BLUEPRINT"


class TransformError(ValueError):
    """A transform could not convert one value; the engine omits the target and warns."""
