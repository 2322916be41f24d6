"""Bounded reads of every file a user hands us: sources files, lists, run.json, recipe
configs, manifests, lock files.

A path that is not a regular file (``/dev/zero``, a folder, a pipe) is refused before it is
opened: reading it would never end or mean nothing. A file over its size limit is refused
with its size; a text file is read whole only under the limit. A CSV field over the field
limit rejects its row (``csv_records``), not the file. Every refusal is a ``BadFile``: a
``ValueError`` whose one-line text names the file and what is wrong.
"""
from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterator

#: sources files and clip lists (VGGSound's csv is ~10 MB; 200k AVSync-style lines ~20 MB)
MAX_LIST_BYTES = 256 << 20
#: run.json, recipe configs, sidecars
MAX_JSON_BYTES = 16 << 20
#: one CSV field or one list line (Python's csv module's own default field limit)
MAX_FIELD_CHARS = 128 << 10


class BadFile(ValueError):
    """A user's file that cannot be read as what it should be; the text names it."""


def regular_file(path: str | os.PathLike, what: str, limit: int | None = None) -> Path:
    """``path`` when it is a regular file of at most ``limit`` bytes; else ``BadFile`` (or
    ``FileNotFoundError`` when it is not there) naming it as ``what``."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise BadFile(f"{what} {path} cannot be read ({e.strerror or e})") from e
    if stat.S_ISDIR(st.st_mode):
        raise BadFile(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise BadFile(f"{what} {path} is not a regular file (a device or pipe cannot be read "
                      f"to an end)")
    if limit is not None and st.st_size > limit:
        raise BadFile(f"{what} {path} is {st.st_size} bytes, over the limit of {limit} bytes")
    return path


def read_text(path: str | os.PathLike, what: str, limit: int = MAX_LIST_BYTES) -> str:
    """The UTF-8 text (a BOM dropped) of a regular file of at most ``limit`` bytes."""
    path = regular_file(path, what, limit)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise BadFile(f"{what} {path} cannot be read ({e.strerror or e})") from e
    if len(data) > limit:
        raise BadFile(f"{what} {path} is over the limit of {limit} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadFile(f"{what} {path} is not UTF-8 text (byte {e.start}: {e.reason})") from e


def read_json(path: str | os.PathLike, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON value of a regular file of at most ``limit`` bytes."""
    text = read_text(path, what, limit)
    try:
        return json.loads(text)
    except ValueError as e:
        where = f"line {e.lineno}, column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise BadFile(f"{what} {path} is not valid JSON ({where})") from e


def csv_records(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """(line number, fields) for every non-blank CSV record; a record holding a field over
    ``MAX_FIELD_CHARS`` (or CSV the reader refuses) gives (line number, why) instead, and
    reading goes on with the next record."""
    reader = csv.reader(io.StringIO(text))
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield reader.line_num, f"unreadable CSV record ({e})"
            continue
        if not fields or all(not f.strip() for f in fields):
            continue
        yield reader.line_num, fields


def long_line(line: str) -> str | None:
    """Why a list line is refused (over ``MAX_FIELD_CHARS``), or None."""
    if len(line) > MAX_FIELD_CHARS:
        return f"line of {len(line)} characters, over the limit of {MAX_FIELD_CHARS}"
    return None
