"""``tests.support.in_ci``: which values of ``CI`` turn a missing component into a failure."""

from __future__ import annotations

import pytest

from tests.support import in_ci


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1", "yes", "on", "github", " true "])
def test_any_ci_value_but_an_off_spelling_is_ci(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """CI services spell it true, True or 1 (or name themselves): each fails a missing part."""
    monkeypatch.setenv("CI", value)
    assert in_ci()


@pytest.mark.parametrize("value", ["", "  ", "0", "false", "False", "FALSE", "no", "No", " no "])
def test_an_empty_or_off_ci_value_is_not_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Empty, 0, false and no (any case) are a developer's run: a missing part skips."""
    monkeypatch.setenv("CI", value)
    assert not in_ci()


def test_no_ci_variable_is_not_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CI in the environment the run is a developer's."""
    monkeypatch.delenv("CI", raising=False)
    assert not in_ci()
