"""safe_message: no server path, folder or file name in what a user reads (property tests)."""
from __future__ import annotations

import os
import string
import tempfile

from hypothesis import example, given, settings
from hypothesis import strategies as st

from demo.messages import FILE, safe_message

SERVER_DIRS = [tempfile.gettempdir(), os.path.expanduser("~"), os.getcwd()]

segment = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=12)
posix = st.lists(segment, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
windows = st.tuples(st.sampled_from("CDZ"), st.sampled_from("\\/"), st.lists(segment, min_size=1, max_size=4)).map(
    lambda t: f"{t[0]}:{t[1]}" + t[1].join(t[2]))
unc = st.lists(segment, min_size=2, max_size=4).map(lambda parts: "\\\\" + "\\".join(parts))
server = st.tuples(st.sampled_from(SERVER_DIRS), st.lists(segment, max_size=3)).map(
    lambda t: "/".join([t[0], *t[1]]))
absolute = st.one_of(posix, windows, unc, server, server.map(lambda p: "file://" + p),
                     windows.map(lambda p: "file:///" + p.replace("\\", "/")))
#: Text without a path: anything but slashes (and surrogates, which no exception text holds).
ordinary = st.text(st.characters(blacklist_characters="/\\", blacklist_categories=("Cs",)), max_size=40)
# Where exception texts put paths: after a space, quote, bracket, '=' or ':'; before punctuation.
before = st.sampled_from(["", " ", ": ", "'", '"', "(", "[", "=", "\n"])
after = st.sampled_from(["", " ", ": ", "'", '"', ")", ".", ",", "\n"])


def _leaks(text: str) -> list[str]:
    return [d for d in SERVER_DIRS if d in text]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ordinary, before, absolute, after), min_size=1, max_size=4), ordinary)
def test_no_injected_path_or_server_folder_survives(pieces: list, end: str) -> None:
    # A path glued to a word ("0/tmp/x") is relative: a separator comes between them.
    text = "".join(a + (b or " " if a else b) + path + c for a, b, path, c in pieces) + end
    out = safe_message(text)
    assert not _leaks(out), (text, out)
    for _, _, path, _ in pieces:
        assert path not in out, (text, out)
    assert safe_message(out) == out  # idempotent: messages may pass through it twice


@settings(max_examples=200, deadline=None)
@given(ordinary, st.sampled_from(SERVER_DIRS), ordinary)
def test_server_folders_are_removed_even_inside_other_text(a: str, folder: str, b: str) -> None:
    out = safe_message(a + folder + b)
    assert not _leaks(out), out


@settings(max_examples=200, deadline=None)
@given(ordinary)
@example("use 1-64 letters, digits, '_', '-', '.' (no path); threshold 0.5: ok")
def test_text_without_paths_is_unchanged(text: str) -> None:
    assert safe_message(text) == text


@settings(max_examples=200, deadline=None)
@given(st.text(string.ascii_letters + string.digits + " _-", min_size=1, max_size=20).filter(str.strip),
       st.sampled_from([".png", ".jpg", ".jpeg", ""]), st.sampled_from(SERVER_DIRS), segment, after, ordinary)
def test_the_users_own_upload_name_is_kept(stem: str, ext: str, folder: str, hash_dir: str, sep: str,
                                           rest: str) -> None:
    name = stem.strip() + ext
    path = f"{folder}/gradio/{hash_dir}/{name}"
    out = safe_message(f"cannot read {path}{sep} {rest}", keep_name=name)
    assert out == f"cannot read {name}{sep} {rest}"
    assert not _leaks(out)
    # Any other path, even in the same folder, is not the upload: a neutral word.
    other = safe_message(f"{folder}/gradio/{hash_dir}/secret_{hash_dir}.pt: bad", keep_name=name)
    assert other == f"{FILE}: bad"


def test_examples_from_the_dashboard() -> None:
    tmp = tempfile.gettempdir()
    assert safe_message(f"{tmp}/gradio/3f2a/corrupt.png: corrupt or truncated image (image file is truncated)",
                        keep_name=f"{tmp}/gradio/3f2a/corrupt.png") == \
        "corrupt.png: corrupt or truncated image (image file is truncated)"
    assert safe_message("[Errno 2] No such file or directory: '/srv/crm/checkpoints/x.pt'") == \
        f"[Errno 2] No such file or directory: '{FILE}'"
    assert safe_message(r"C:\Users\me\AppData\Local\Temp\gradio\ab\cat.png: bad", keep_name="cat.png") == "cat.png: bad"
    assert safe_message("see file:///home/me/x.png, then http://host/page") == f"see {FILE}, then http://host/page"
    assert safe_message("ratio 1/2 and a/b stay") == "ratio 1/2 and a/b stay"
