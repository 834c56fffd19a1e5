"""One escaping rule for text an agent controls, wherever it is shown: coach prompts, transcripts, ``mappa play``.

Agent replies, kernel output, file names and grader reasons are attacker-controlled. Shown raw, an OSC sequence
retitles (or worse) the user's terminal, a raw carriage return overwrites the line before it, a bidi override
shows text in another order than a model reads it, and a NUL cuts the string in C-based tools. :func:`escape_text`
makes every such character visible as a Python-style escape (``\\x1b``, ``\\r``, ``\\u202e``), keeping newlines
and tabs; :func:`escape_line` also escapes those, for text that must stay on one line (a file name).

Colour codes (SGR, ``ESC [ ... m``) in kernel tracebacks are dropped first rather than shown escaped: they are
noise to a reader and to a coach. Everything else is kept, escaped, so nothing is hidden either.
"""

from __future__ import annotations

import re

_SGR = re.compile(r"\x1b\[[0-9;]*m")
# C0 controls but \t and \n, DEL, C1 controls; bidi embeddings, overrides, isolates and marks; line and paragraph
# separators (they break lines in some renderers but not in others); BOM/zero-width no-break space.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff]"
)
_UNSAFE_LINE = re.compile(_UNSAFE.pattern[:-1] + "\t\n]")


def _escaped(m: re.Match[str]) -> str:
    ch = m.group(0)
    named = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}
    if ch in named:
        return named[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(text: object) -> str:
    """``text`` with colour codes dropped and every other control, escape or bidi character shown escaped.

    Newlines and tabs are kept. Idempotent on its own output, so escaping twice is harmless.
    """
    s = text if isinstance(text, str) else ("" if text is None else str(text))
    return _UNSAFE.sub(_escaped, _SGR.sub("", s))


def escape_line(text: object) -> str:
    """As :func:`escape_text`, and newlines and tabs escaped too: the result is one line."""
    s = text if isinstance(text, str) else ("" if text is None else str(text))
    return _UNSAFE_LINE.sub(_escaped, _SGR.sub("", s))
