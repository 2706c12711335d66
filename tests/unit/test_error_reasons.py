"""Every ErrorInfo reason the server sets is in docs/amperity-client.md's reason tables.

The reasons are read from the source: each error class's ``reason``, each ``reason=``
given, and the reason of each of the Amperity client's status rules (a tuple of an error
class and its reason). Until session 26 ``PROFILE_UNAVAILABLE`` and
``UNKNOWN_HEALTH_SERVICE`` were in no document. The gateway's own codes are
docs/gateway.md's (tests/gateway/test_error_codes.py); the sandbox is no part of the service.
"""

from __future__ import annotations

import ast
import contextvars
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

from amperity_signal import delivery
from amperity_signal.errors import AmperityError, AmperitySignalError
from amperity_signal.service import status

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server" / "amperity_signal"


def _subclasses(cls: type[AmperityError]) -> Iterator[type[AmperityError]]:
    yield cls
    for subclass in cls.__subclasses__():
        yield from _subclasses(subclass)


# The classes a status rule of the Amperity client names first (``responses._RULES``).
_ERROR_CLASSES = {cls.__name__ for cls in _subclasses(AmperityError)}


def _constants(node: ast.expr) -> Iterator[str]:
    """The strings ``node`` can be: a constant, or either side of ``a if c else b``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _constants(node.body)
        yield from _constants(node.orelse)


def set_reasons() -> dict[str, set[str]]:
    """Every reason written in the server's source, with the files that write it."""
    found: dict[str, set[str]] = {}
    for path in sorted(SERVER.rglob("*.py")):
        where = path.relative_to(SERVER)
        if where.parts[0] in ("sandbox", "gateway"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            for value in _reason_values(node):
                for reason in _constants(value):
                    found.setdefault(reason, set()).add(str(where))
    return found


def _reason_values(node: ast.AST) -> Iterator[ast.expr]:
    if isinstance(node, ast.ClassDef):
        for statement in node.body:
            if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
                targets = (
                    statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                )
                if any(isinstance(t, ast.Name) and t.id == "reason" for t in targets):
                    yield statement.value
    elif isinstance(node, ast.keyword) and node.arg == "reason":
        yield node.value
    elif (
        isinstance(node, ast.Tuple)
        and len(node.elts) >= 2
        and isinstance(node.elts[0], ast.Name)
        and node.elts[0].id in _ERROR_CLASSES
    ):
        yield node.elts[1]


def error_reasons_section() -> str:
    """docs/amperity-client.md's "Error reasons" section: its tables and what follows them."""
    text = (ROOT / "docs" / "amperity-client.md").read_text()
    start = text.index("## Error reasons")
    return text[start : text.index("\n## ", start + 1)]


def documented() -> set[str]:
    """The reasons of docs/amperity-client.md's "Error reasons" tables."""
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", error_reasons_section(), re.MULTILINE))


def test_every_reason_the_server_sets_is_documented_and_no_other() -> None:
    """A reason added without a row (or a row left for a reason gone) fails."""
    reasons = set_reasons()
    assert all(re.fullmatch(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*", r) for r in reasons), reasons
    assert documented() == set(reasons)


def test_the_collected_reasons_include_those_raised_by_class_and_by_call() -> None:
    """The reading finds a class's reason, a rule's, a reason= call's and the health one."""
    reasons = set_reasons()
    assert AmperitySignalError.reason in reasons  # INTERNAL, the base class's
    assert {"PROFILE_UNAVAILABLE", "STREAM_NOT_FOUND", "RATE_LIMITED_LOCALLY"} <= set(reasons)
    # In a context of its own: it tells ANSWERED_WITH, which set in this (the process's
    # main) context was inherited by every later test's server tasks, and their calls'
    # observations logged UNKNOWN_HEALTH_SERVICE as their reason.
    answered = contextvars.copy_context().run(
        status.unknown_health_service, "no.such.Service", ["datafly.amperity.v1"]
    )
    assert answered.code == grpc.StatusCode.NOT_FOUND
    [packed] = [v for k, v in answered.trailing_metadata if k == "grpc-status-details-bin"]
    info = error_details_pb2.ErrorInfo()
    status_pb2.Status.FromString(packed).details[0].Unpack(info)
    assert info.reason in reasons


def test_a_failed_delivery_s_metadata_and_maybe_delivered_text_are_documented() -> None:
    """The message_id and unanswered attempt a Deliver failure names, and what it then says."""
    section = " ".join(error_reasons_section().split())
    for key in (delivery.MESSAGE_ID_METADATA, delivery.UNANSWERED_METADATA):
        assert f"`{key}`" in section
    said = delivery.MAYBE_DELIVERED.split(" (")[0].format(attempt="N").strip()
    assert said in section
