"""Which characters an id may not hold: those that split a line or a header, and no others."""

from __future__ import annotations

import pytest

from amperity_signal.limits import control_character_problem


@pytest.mark.parametrize(
    ("identifier", "named"),
    [
        ("anon\n1", "the control character '\\n' at position 4"),
        ("anon\x7f", "the control character '\\x7f' at position 4"),
        ("anon\x851", "the control character '\\x85' at position 4"),  # NEL, C1
        ("a\x9f", "the control character '\\x9f' at position 1"),
        ("anon\u20281", "the line separator '\\u2028' at position 4"),
        ("anon\u20291", "the line separator '\\u2029' at position 4"),
    ],
)
def test_c0_del_c1_and_the_unicode_line_separators_are_refused_by_name(
    identifier: str, named: str
) -> None:
    """C1 codes and U+2028/U+2029 break lines in log viewers as C0 does (until session 27 taken)."""
    problem = control_character_problem(identifier)
    assert problem is not None
    assert problem.startswith(f"holds {named}; ")
    assert "U+2028" in problem


@pytest.mark.parametrize("identifier", ["caf\u00e9", "a\u00a0b", "a\u00adb", "\u200b", "c\u00a0"])
def test_other_characters_python_calls_unprintable_are_taken(identifier: str) -> None:
    """A no-break space, a soft hyphen or a zero-width space splits nothing: taken."""
    assert control_character_problem(identifier) is None
