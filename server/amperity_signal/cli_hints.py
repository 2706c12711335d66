"""Command-line mistakes told what was meant: ``serv`` is ``serve``, ``--conifg`` ``--config``.

argparse (3.11) names a word it did not take and the choices, but not the one the word is a
slip from. ``with_hint`` adds it to argparse's own message, as ``check-config`` does for a
configuration's keys (``config_values.closest``): case, hyphens and underscores aside, or
one close spelling.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from typing import NoReturn

from amperity_signal.config_values import closest

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")
_UNRECOGNIZED = "unrecognized arguments: "


def with_hint(message: str, options: Iterable[str]) -> str:
    """The message argparse gave, with "did you mean ...?" where a word is a slip from one.

    ``options``: the option strings the words could have meant (``--config``, ...).
    """
    choice = _INVALID_CHOICE.search(message)
    if choice is not None:
        guess = closest(choice[1], tuple(re.findall(r"'([^']*)'", choice[2])))
        return f"{message}; did you mean {guess!r}?" if guess else message
    if not message.startswith(_UNRECOGNIZED):
        return message
    # The words end where the message goes on: "; the following ..." or " (see ...".
    end = min(
        (at for at in (message.find(";"), message.find(" (see ")) if at != -1),
        default=len(message),
    )
    longs = tuple(option for option in options if option.startswith("--"))
    for word in message[len(_UNRECOGNIZED) : end].split():
        if word.startswith("--"):
            guess = closest(word.split("=", 1)[0], longs)
            if guess is not None:
                return f"{message[:end]} (did you mean {guess}?){message[end:]}"
    return message


def option_strings(parser: argparse.ArgumentParser, words: Iterable[str] = ()) -> list[str]:
    """``parser``'s option strings, and those of the subcommands named in ``words``."""
    options = [name for action in parser._actions for name in action.option_strings]
    words = list(words)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in words:
                sub = action.choices.get(word)
                if isinstance(sub, argparse.ArgumentParser):
                    options += option_strings(sub, words)
                    break
    return options


class HintingParser(argparse.ArgumentParser):
    """argparse's parser, whose errors say what a mistyped command or option meant."""

    _words: list[str] | None = None
    """The words parsed, where a subclass keeps them: their subcommands' options count."""

    def error(self, message: str) -> NoReturn:
        """As argparse's (usage, the message, exit 2), with ``with_hint``'s guess."""
        super().error(with_hint(message, option_strings(self, self._words or ())))
