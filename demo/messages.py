"""What a user may read: ``safe_message`` removes server detail from any text shown in the dashboard.

Exception texts carry absolute paths (gradio's upload folder under the system temp dir, the
checkpoint folder, the home directory); a user must never see them. Every gr.Error, gr.Warning,
gr.Info and status text built from an exception passes through :func:`safe_message`; the full
original text goes to the server log only.

A path becomes its last component when that is the user's own upload name (they know it), else
the neutral word :data:`FILE`. The temp dir, home dir and working dir are also removed wherever
they appear, even inside other text. Text without ``/`` or ``\\`` is returned unchanged.
"""
from __future__ import annotations

import os
import re
import tempfile

__all__ = ["FILE", "FOLDER", "safe_message"]

FILE = "[file]"  # not "<file>": gradio renders error messages as HTML, where a tag would vanish
FOLDER = "[server folder]"

# Characters that end a path: whitespace, quotes and the brackets messages wrap paths in.
_STOP = r"\s'\"`<>|"
# A path ends before trailing punctuation ("... /tmp/a.png: corrupt", "(/tmp/a.png).").
_TRAILING = ":,;.!?)]}"
_START = r"(?<![\w.~/\\-])"  # a path starts after a space, quote, bracket, '=' or ':' (not a/b, 1/2)
_PATHS = re.compile(
    rf"(?<![\w])file:/[^{_STOP}]*"  # file:// URLs, any host or drive
    rf"|{_START}/[^{_STOP}/]+(?:/[^{_STOP}/]*)*"  # POSIX absolute (not http://host/p either)
    rf"|(?<![\w])[A-Za-z]:[\\/][^{_STOP}]*"  # Windows drive: C:\x or C:/x
    rf"|\\\\[^{_STOP}\\]+(?:\\[^{_STOP}]*)?"  # Windows UNC: \\server\share\x
)


def _server_dirs() -> list[str]:
    """Temp, home and working dirs (and their resolved forms), longest first; never the root."""
    dirs = set()
    for path in (tempfile.gettempdir(), os.path.expanduser("~"), os.getcwd()):
        for form in (path, os.path.realpath(path)):
            form = form.rstrip("/\\")
            if len(form) > 1 and form != "~":
                dirs.add(form)
    return sorted(dirs, key=len, reverse=True)


def _last_component(path: str) -> str:
    return re.split(r"[/\\]", path.rstrip("/\\"))[-1]


def safe_message(text: object, keep_name: str | None = None) -> str:
    """``text`` with every absolute path, file:// URL and server directory removed.

    Args:
        text: a message (or an exception: its ``str``).
        keep_name: the user's own upload name; a path ending in it is shown as that name.

    Returns:
        The text with each path replaced by ``keep_name`` (when it is the path's last component)
        or by :data:`FILE`, and any remaining temp / home / working dir by :data:`FOLDER`.
    """
    text = str(text)
    keep = _last_component(str(keep_name)) if keep_name else ""
    keep = keep if keep.strip(". ") else ""  # "", "." and ".." name nothing

    def neutral(match: re.Match) -> str:
        path = match.group(0)
        return FILE + path[len(path.rstrip(_TRAILING)):]

    if keep:  # the upload's whole path first: its name may hold spaces, which end a path below
        text = re.sub(rf"{_START}(?:file:/+)?(?:[A-Za-z]:)?(?:[/\\][^{_STOP}/\\]+)*[/\\]{re.escape(keep)}"
                      rf"(?=[{re.escape(_TRAILING)}]*(?:[{_STOP}]|$))", lambda _: keep, text)
    text = _PATHS.sub(neutral, text)
    for folder in _server_dirs():  # inside other text too ("x/tmp/y", "--dir=/home/me"), with what follows it
        text = re.sub(rf"{re.escape(folder)}(?:[/\\][^{_STOP}/\\]*)*", FOLDER, text)
    return text
