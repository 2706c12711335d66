"""The short stdout table: one row per measured figure, ours vs bare, ratio, target."""

from __future__ import annotations

from typing import Any


def _row(name: str, ours: str, bare: str, ratio: str, target: str) -> str:
    return f"| {name} | {ours} | {bare} | {ratio} | {target} |"


def _ok(flag: Any) -> str:
    return "n/a" if flag is None else ("MET" if flag else "MISSED")


def table(results: dict[str, Any]) -> str:
    """Markdown table of the headline figures of every benchmark that ran."""
    rows = [
        _row("figure", "ours", "baseline", "ratio", "target"),
        _row("---", "---", "---", "---", "---"),
    ]
    for name, result in results.items():
        if "error" in result:
            rows.append(_row(name, "ERROR", "", "", result["error"][:60]))
            continue
        for line in result.get("table", []):
            rows.append(_row(*line))
    return "\n".join(rows)
