"""``lifeline.stop_with_parent``: a started process's tie to its starter."""

from __future__ import annotations

import os
import subprocess
import sys

from amperity_signal.lifeline import PARENT_ENV, stop_with_parent

# In a process of its own (the flag would outlive the test in pytest's): the signal Linux
# will send at its parent's death (PR_GET_PDEATHSIG), and what is left of the variable.
_CHILD = """
import ctypes, os
from amperity_signal.lifeline import PARENT_ENV, stop_with_parent
set_ = stop_with_parent(os.environ, os.getppid())
sig = ctypes.c_int(0)
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)
print(set_, sig.value, os.environ.get(PARENT_ENV))
"""


def test_a_started_process_is_sent_sigterm_at_its_parents_death_and_the_variable_removed() -> None:
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
    )
    assert child.stdout.split() == ["True", "15", "None"]


def test_a_variable_naming_another_process_than_the_parent_sets_nothing() -> None:
    """Come down from a grandparent, or the starter died already: nothing to tie to."""
    environ = {PARENT_ENV: "1"}
    assert stop_with_parent(environ, 2) is False
    assert environ == {}


def test_no_variable_sets_nothing() -> None:
    assert stop_with_parent({}, os.getppid()) is False
