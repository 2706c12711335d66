"""Every error code the gateway can answer is documented, with its status, and nothing else.

The codes are read from the gateway's source (its ``GatewayError`` constructions, followed
through the variables and parameters that carry a code to one) and from the service's
reasons it passes through (an INVALID_ARGUMENT's ErrorInfo reason). Until session 26
twelve of them (``BATCH_TOO_LARGE``, ``SERVICE_NOT_READY``, ...) were in no document,
although the OpenAPI document calls the codes stable.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx

from amperity_signal import errors
from amperity_signal.errors import AmperityRejected, AmperitySignalError
from amperity_signal.gateway.errors import REFUSAL_STATUSES
from amperity_signal.service.status import code_for
from tests.contract.harness import SANDBOX_URL
from tests.support import OutageStore
from tests.unit.enrich.enrich_fakes import FakeClock

from .conftest import GatewayFactory
from .fakes import KNOWN_KEY
from .realservice import real_stack

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "server" / "amperity_signal" / "gateway"
_CODE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
# A status read from the code: a number, or None where it is a variable (http_status_error).
Emitted = dict[str, set[int | None]]


class _Module:
    """One module's tree, with each node's enclosing function."""

    def __init__(self, path: Path) -> None:
        self.tree = ast.parse(path.read_text())
        self.enclosing: dict[ast.AST, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        # ast.walk goes breadth first: an inner function comes after its outer one, and
        # so overwrites it as the enclosing function of what it holds.
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if inner is not node:
                        self.enclosing[inner] = node


class GatewayCodes:
    """The codes the gateway's ``GatewayError`` constructions can carry, with their statuses."""

    def __init__(self) -> None:
        self.modules = [_Module(path) for path in sorted(GATEWAY.glob("*.py"))]
        self.unresolved: list[str] = []
        self.emitted: Emitted = {}

    def collect(self) -> Emitted:
        for module in self.modules:
            for call in _calls(module.tree):
                args = _constructor_args(call, module)
                if args is None:
                    continue
                status, code = args
                status_value = _status(status)
                for value, keyed_status in self._values(code, module, call):
                    statuses = self.emitted.setdefault(value, set())
                    statuses.add(keyed_status if keyed_status is not None else status_value)
        return self.emitted

    def _values(
        self, node: ast.expr, module: _Module, at: ast.AST
    ) -> Iterator[tuple[str, int | None]]:
        """The string values ``node`` can take, each with a status when the value gives one."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, None
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                yield from self._values(value, module, at)
        elif isinstance(node, ast.IfExp):
            yield from self._values(node.body, module, at)
            yield from self._values(node.orelse, module, at)
        elif _is_dict_get(node):
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            table = self._module_dict(module, node.func.value)
            for key, value in zip(table.keys, table.values, strict=True):
                assert isinstance(value, ast.Constant) and isinstance(value.value, str)
                yield value.value, _status(key)
            yield from self._values(node.args[1], module, at)
        elif isinstance(node, ast.Name):
            yield from self._name_values(node.id, module, at)
        else:
            self.unresolved.append(ast.unparse(node))

    def _name_values(
        self, name: str, module: _Module, at: ast.AST
    ) -> Iterator[tuple[str, int | None]]:
        function = module.enclosing.get(at)
        if function is None:
            self.unresolved.append(name)
            return
        assigned = [
            node.value
            for node in ast.walk(function)
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        ]
        for value in assigned:
            yield from self._values(value, module, function)
        parameters = [a.arg for a in function.args.args]
        if assigned or name not in parameters:
            if not assigned:
                self.unresolved.append(f"{function.name}: {name}")
            return
        # A parameter: the values every caller passes for it.
        position = parameters.index(name)
        for caller_module in self.modules:
            for call in _calls(caller_module.tree):
                if _called_name(call) != function.name:
                    continue
                passed = [k.value for k in call.keywords if k.arg == name]
                passed += call.args[position : position + 1]
                for value in passed:
                    yield from self._values(value, caller_module, call)

    @staticmethod
    def _module_dict(module: _Module, node: ast.expr) -> ast.Dict:
        assert isinstance(node, ast.Name)
        for statement in module.tree.body:
            if not isinstance(statement, ast.Assign | ast.AnnAssign):
                continue
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            named = any(isinstance(t, ast.Name) and t.id == node.id for t in targets)
            if named and isinstance(statement.value, ast.Dict):
                return statement.value
        raise AssertionError(f"no module-level dict {node.id}")


def _status(node: ast.expr | None) -> int | None:
    """An HTTP status written as a number; None for a variable."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    return None


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _is_dict_get(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and len(node.args) == 2
    )


def _constructor_args(call: ast.Call, module: _Module) -> tuple[ast.expr, ast.expr] | None:
    """(status, code) of a ``GatewayError(...)``, or of a subclass's ``super().__init__``."""
    name = _called_name(call)
    if name == "GatewayError":
        return call.args[0], call.args[1]
    if name == "__init__" and isinstance(call.func, ast.Attribute):
        owner = call.func.value
        if isinstance(owner, ast.Call) and _called_name(owner) == "super":
            classes = [
                node
                for node in ast.walk(module.tree)
                if isinstance(node, ast.ClassDef) and call in set(ast.walk(node))
            ]
            bases = {ast.unparse(base) for cls in classes for base in cls.bases}
            if "GatewayError" in bases:
                return call.args[0], call.args[1]
    return None


def passed_through() -> set[str]:
    """The service's reasons the gateway answers as codes: those of an INVALID_ARGUMENT.

    ``from_rpc_error`` answers such a status 400 (413 for PAYLOAD_TOO_LARGE: its
    ``REFUSAL_STATUSES``) with its ErrorInfo reason. Every error
    class whose status is INVALID_ARGUMENT, and AmperityRejected's one such reason.
    """
    reasons = set()
    pending = [AmperitySignalError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__ != errors.__name__ or issubclass(cls, errors.AmperityError):
            continue
        if code_for(cls.__new__(cls)) == grpc.StatusCode.INVALID_ARGUMENT:
            reasons.add(cls.reason)
    too_large = AmperityRejected("413", reason="PAYLOAD_TOO_LARGE", status_code=413)
    assert code_for(too_large) == grpc.StatusCode.INVALID_ARGUMENT
    return reasons | {too_large.reason}


def documented() -> dict[str, str]:
    """docs/gateway.md's error-code table: each code's status cell."""
    lines = (ROOT / "docs" / "gateway.md").read_text().splitlines()
    start = lines.index("<!-- gateway-error-codes -->") + 3
    rows: dict[str, str] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        code, status = (cell.strip() for cell in line.strip("|").split("|")[:2])
        rows[code.strip("`")] = status
    return rows


def test_every_code_the_gateway_answers_is_documented_and_no_other() -> None:
    """The table's codes are exactly those the gateway's code can put in an error body."""
    collector = GatewayCodes()
    emitted = collector.collect()
    # ``reason`` from the service's ErrorInfo: the pass-through, counted below.
    assert collector.unresolved == ["from_rpc_error: reason"]
    assert all(_CODE.fullmatch(code) for code in emitted)
    codes = set(emitted) | passed_through()
    assert set(documented()) == codes


def test_each_documented_status_is_one_the_gateway_answers_the_code_with() -> None:
    """A code answered with a fixed status names that status in its row."""
    rows = documented()
    for code, statuses in GatewayCodes().collect().items():
        for status in statuses - {None}:
            assert str(status) in rows[code], (code, status)
    for reason in passed_through():
        assert rows[reason].startswith(str(REFUSAL_STATUSES.get(reason, 400))), reason


async def test_the_readme_names_each_size_limit_s_answer(make_gateway: GatewayFactory) -> None:
    """max_batch_events is a count answered 400 BATCH_TOO_LARGE; the sizes 413 and 431."""
    gateway = make_gateway(max_batch_events=2, max_body_bytes=1_024, max_header_bytes=1_024)
    key = {"X-Pipeline-Key": KNOWN_KEY}
    event = {"type": "track", "event": "Product Viewed", "anonymousId": "a-1"}
    answers = {
        "max_batch_events": await gateway.post(
            "/v1/batch", json={"batch": [event] * 3}, headers=key
        ),
        "max_body_bytes": await gateway.post(
            "/v1/t", json={**event, "properties": {"note": "x" * 2_000}}, headers=key
        ),
        "max_header_bytes": await gateway.post(
            "/v1/t", json=event, headers={**key, "X-Padding": "x" * 2_000}
        ),
    }
    readme = (ROOT / "README.md").read_text().splitlines()
    for field, answer in answers.items():
        [row] = [line for line in readme if line.startswith(f"| `{field}` |")]
        said = f"{answer.status_code} `{answer.json()['error']['code']}`"
        assert said in row, (field, said)


async def test_an_event_amperity_refuses_as_too_large_is_answered_413_payload_too_large() -> None:
    """Amperity's 413 for a delivered event reaches the page as 413, not as a 400.

    The body was within the gateway's limits; Amperity (or a proxy in front of it) found
    the mapped event too large. Until session 27 the page was told 400, as for a mistake
    in the event's fields; a batch answers it in that event's result, with the same code.
    """
    async with real_stack(OutageStore(), FakeClock()) as stack:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=stack.sandbox), base_url=SANDBOX_URL
        ) as inspector:
            fault = {"status": 413, "kind": "events", "count": 2}
            (await inspector.post("/_sandbox/faults", json=fault)).raise_for_status()
        event = {"event": "Order Completed", "anonymousId": "anon-large"}
        key = {"X-Pipeline-Key": "pk_web"}
        single = await stack.client.post("/v1/t", json=event, headers=key)
        batch = await stack.client.post("/v1/batch", json={"batch": [event]}, headers=key)
    assert single.status_code == 413, single.text
    error = single.json()["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert "at most 65,536 bytes" in error["message"]
    [result] = batch.json()["results"]
    assert (batch.status_code, result["ok"], result["code"]) == (200, False, "PAYLOAD_TOO_LARGE")
