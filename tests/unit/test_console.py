"""The ``amperity-signal`` console script, as pip generates it from ``pyproject.toml``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The console script pip writes (``from MODULE import FUNCTION``, then ``sys.exit``), with
# a Ctrl-C pressed while ``amperity_signal.cli`` (the command line's modules) is imported.
_CTRL_C_WHILE_IMPORTING = """
import importlib, sys
from importlib.abc import MetaPathFinder

class CtrlC(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "amperity_signal.cli":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
module, _, function = sys.argv[1].partition(":")
main = getattr(importlib.import_module(module), function)
sys.exit(main())
"""


def test_a_ctrl_c_while_the_command_line_is_imported_exits_130_without_a_traceback() -> None:
    """Ctrl-C in the first second of ``make demo``: exit 130, and no traceback printed."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    result = subprocess.run(
        [sys.executable, "-c", _CTRL_C_WHILE_IMPORTING, scripts["amperity-signal"], "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr == "", result.stderr
