"""The sandbox's refusals.

``RefusalError`` is raised by a check deep inside a route and turned by the route into
Amperity's error body (:func:`amperity_signal.sandbox.responses.error`)::

    Exception
    ├── RefusalError       an API request answered with an error status
    ├── SandboxDataError   (data.py, a ValueError) a data file that cannot be loaded
    ├── TokenError         (tokens.py) a token that does not authenticate
    ├── FaultSpecError     (faults.py, a ValueError) a fault description that cannot be used
    └── ConnectionDropped  (edge.py) a drop or cut-body fault outside a real server
"""

from __future__ import annotations


class RefusalError(Exception):
    """An API request refused with ``status`` and a message saying what to change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
