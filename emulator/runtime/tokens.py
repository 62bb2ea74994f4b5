"""The one gate for untrusted text on its way into a command.

cloudemu runs as root and writes batch text (`ip -batch`, `tc -batch`, `ovs-ofctl add-flows`) and
argument lists (`ovs-vsctl`). Some of the words in them come from outside: resource ids, names and
MACs of a goal state that arrived over the emulated network, an experiment name from `--name` or the
Python API. A newline in one of them is a second command; a space, a quote or a `#` changes how the
tool splits the line. So:

- names and ids are checked here, by full match, before anything is derived from them
  (`identifier`), and a name on the machine is derived from a checked id, never the id itself;
- every batch writer passes its lines through `batch_text`, and every argument list through
  `argv_words`, which refuse a line break or control character anywhere: the last line of defence
  when a check upstream was forgotten.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from emulator.model import CloudemuError

#: An id as Alcor makes them (UUIDs), or as a test makes them: letters, digits and `_.-`, no leading punctuation.
IDENTIFIER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: What may appear in a line of batch text or an argument: printable, no line break, no NUL, no escape.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
#: Characters `ip -batch` and `tc -batch` treat specially inside a line (quoting, escaping, comments).
_BATCH_SPECIAL = re.compile(r"[\"'\\#]")


class UnsafeToken(CloudemuError, ValueError):
    """A word that would change the meaning of the command it was meant to be part of."""

    exit_code = 2


def identifier(value: object, what: str = "id") -> str:
    """An id that may become part of a name on the machine; anything else is refused."""
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value):
        raise UnsafeToken(f"{what} {value!r:.80} is not an identifier (letters, digits, '_', '.', '-'; at most 128)")
    return value


def batch_text(lines: Iterable[str], tool: str) -> str:
    """Lines for `ip -batch` / `tc -batch` / `ovs-ofctl`, joined: each line one command, nothing that splits
    or quotes. Checked as one string (C speed: a message of 100,000 neighbours has 200,000 flow lines)."""
    lines = list(lines)
    if not lines:
        return ""
    text = "\n".join(lines)
    special = _BATCH_SPECIAL if tool in ("ip", "tc") else None
    if text.count("\n") != len(lines) - 1 or _CONTROL_BUT_NEWLINE.search(text) or (special and special.search(text)):
        bad = next(line for line in lines if _CONTROL.search(line) or (special and special.search(line)))
        raise UnsafeToken(f"refusing a {tool} batch line with a line break, control or quoting character: {bad!r:.120}")
    return text + "\n"


def argv_words(argv: Sequence[str]) -> list[str]:
    """An argument list: no word may hold a line break or a control character."""
    out = [str(a) for a in argv]
    for word in out:
        if _CONTROL.search(word):
            raise UnsafeToken(f"refusing an argument with a line break or control character: {word!r:.120}")
    return out
