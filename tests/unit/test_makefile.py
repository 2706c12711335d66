"""The Makefile's first step for a newcomer: what ``make demo`` installs into a new virtualenv.

``make -n`` prints the recipes make would run, without running them, so the test reads
the plan for a virtualenv that does not exist yet (``VENV`` pointed at an empty path).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def planned(target: str, venv: Path) -> list[str]:
    """The commands ``make TARGET`` would run for a virtualenv at ``venv`` not yet made."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def test_make_demo_installs_the_service_without_the_development_tools(tmp_path: Path) -> None:
    """The demo needs the runtime packages only: half the packages, a quarter of the bytes."""
    commands = planned("demo", tmp_path / "venv")
    installs = [c for c in commands if " install " in c]
    assert any(c.endswith("pip install --quiet -e .") for c in installs), installs
    assert not [c for c in installs if "[dev]" in c or "clients/python" in c], installs
    assert commands[-1].endswith("amperity-signal demo ")
