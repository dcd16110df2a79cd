"""Strings from programs and files, made safe to show on a terminal.

Thread names, file paths and command lines come from whoever made them: a
name like "conn-\\x1b]0;PWNED\\x07" printed raw would retitle, recolour or
rewrite the terminal of the operator who runs `python -m osvrt top`.  Every
such string is shown through printable(), which escapes each character that
str.isprintable() rejects (C0 and C1 controls, DEL, Unicode format
characters such as bidirectional overrides, line and paragraph separators,
lone surrogates) the way repr() does: \\x1b, \\u202e; an undecodable
byte of a path (surrogateescape) shows as the byte, \\xff.  Everything
else, letters of any script included, is kept.
"""


def _escape(ch):
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:          # an undecodable byte (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(s):
    """s with its non-printable characters escaped (see the module doc);
    bytes are decoded first (UTF-8, undecodable bytes escaped)."""
    if isinstance(s, bytes):
        s = s.decode("utf-8", "surrogateescape")
    s = str(s)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in s)
