"""Failure messages -> reason categories (rows group by why, not by which file): what
``curate stats`` and the ledger's ``--against`` report share."""
from __future__ import annotations

import re


#: words that name a stage when they lead an error text ("score: RuntimeError: x")
_STAGE_WORDS = {"sources", "source", "download", "split", "shots", "score", "select", "merge",
                "cut", "shard", "review", "fixed_clips", "error", "clip not ok", "decode"}
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_ID = re.compile(r"\S*_\d{6}_\d{6}\S*")
_PATH = re.compile(r"(?<!\S)(?:/|\./|https?//)\S+")


def reason_category(error: str | None) -> str:
    """A failure message -> its reason category, so rows group by why, not by which file.

    The leading stage word and any part naming a file, URL or id are dropped; the first
    remaining ``:``-separated part is the reason, with ids, paths, numbers and quoted values
    masked: ``"score: /m/x.mp4: moov atom not found"`` -> ``"moov atom not found"``,
    ``"merge: clip length 1.50s < min_len 2.00s"`` -> ``"clip length Ns < min_len Ns"``.
    """
    if not error:
        return "unknown"
    for p in (p.strip() for p in str(error).split(":")):
        if not p or p.lower() in _STAGE_WORDS or _names_a_thing(p):
            continue
        text = p.split("(")[0].strip() or p
        text = _ID.sub("<id>", _PATH.sub("<path>", _QUOTED.sub("'…'", text)))
        if not re.fullmatch(r"HTTP Error \d+", text):
            text = _NUMBER.sub("N", text)
        return text[:60]
    return "unknown"


def _names_a_thing(part: str) -> bool:
    """A path, URL, file name or id (one token), or a bracketed extractor tag (``[youtube] x``)."""
    if part.startswith("["):
        return True
    if " " in part:
        return False
    return ("/" in part or "\\" in part or bool(re.search(r"\.[A-Za-z0-9]{2,4}$", part))
            or bool(_ID.fullmatch(part)))
