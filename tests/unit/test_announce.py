"""Ready lines go out in one write, so workers sharing stdout cannot run them together."""

from __future__ import annotations

import pytest

from amperity_signal.processes import announce


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        self.flushes += 1


def test_a_ready_line_is_one_write_with_its_newline_then_flushed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr("sys.stdout", recorder)
    announce("gateway listening on http://127.0.0.1:8080")
    assert recorder.writes == ["gateway listening on http://127.0.0.1:8080\n"]
    assert recorder.flushes == 1
