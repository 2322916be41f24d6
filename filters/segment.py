"""What a filter's ``run`` sees: one decoded segment, its window rows and its models.

``Segment`` holds the analysis grid (``decoding.media.Grid``), the window rows being
scored, each window's first grid frame (``i0``), the scorers of the run's models and one
feature cache per filter (features are computed once per distinct input of the segment
and shared by every window that needs them). ``curate.ops.scoring`` builds one per segment
and runs the cascade; each filter module's ``run(seg, alive)`` scores the windows ``alive``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from filters import sampling


def error_note(e: BaseException) -> str:
    return f"error: {type(e).__name__}: {e}"


class Scorers:
    """The scorers of a run's models, by model name (``ModelSpec.name``: ``clip``,
    ``imagebind``, ``sync``); any may be missing or None (its filter is then skipped with a
    note). ``Scorers(clip=..., sync=...)``; ``get(filter)`` the scorer of a filter's model."""

    def __init__(self, **by_model: Any) -> None:
        self.by_model = {k: v for k, v in by_model.items() if v is not None}

    def __getattr__(self, name: str) -> Any:
        if name == "by_model":
            raise AttributeError(name)
        return self.by_model.get(name)

    def get(self, filter_name: str) -> Any:
        from filters import registry
        model = registry.spec(filter_name).model
        return None if model is None else self.by_model.get(model.name)


class Segment:
    """Per-segment state of one scoring call (see the module docstring).

    ``path`` / ``offset``: the segment's media file and where the segment's time 0 lies on
    its clock (a stream copy keeps its source's timestamps); only a filter that reads the
    file itself (the released sync convention) uses them."""

    def __init__(self, grid, rows: list[dict], i0: list[int | None], scorers: Scorers,
                 class_text: str | None, path: str | None = None, offset: float | None = 0.0):
        self.grid, self.rows, self.i0, self.scorers = grid, rows, i0, scorers
        self.class_text, self.path, self.offset = class_text, path, offset
        self.caches: dict[str, dict] = {}

    def model(self, filter_name: str) -> Any:
        return self.scorers.get(filter_name)

    def cache(self, name: str) -> dict:
        """A feature cache of this segment (one per ``name``), shared by its windows."""
        return self.caches.setdefault(name, {})

    def frames(self, idx: Iterable[int]) -> np.ndarray:
        t = len(self.grid.frames)
        return self.grid.frames[[min(max(int(i), 0), t - 1) for i in idx]]

    def bounds(self, k: int) -> tuple[float, float]:
        r = self.rows[k]
        return float(r["start"]), float(r["end"])

    def uniform10(self, k: int) -> list[int]:
        """Grid indices of window ``k``'s 10 uniform frames (``filters.sampling``)."""
        s, e = self.bounds(k)
        return sampling.uniform10_indices(s, e, self.grid.start)

    def audio_key(self, t0: float, seconds: float) -> int:
        """Start sample of ``grid.audio_slice(t0, t0 + seconds)`` after sliding inside the grid."""
        g = self.grid
        n = int(round(seconds * g.sample_rate))
        total = g.audio_channels.shape[1]
        return min(max(g.sample_index(t0), 0), max(total - n, 0))

    def audio_at(self, key: int, seconds: float) -> np.ndarray:
        g = self.grid
        return g.audio_slice(g.start + key / g.sample_rate, g.start + key / g.sample_rate + seconds)

    def audio_time(self, key) -> float:
        """Segment time of an audio key: a start sample of the grid's audio (an int), or of
        the wide audio (``("w", sample)``: the sync offset search's clips, which reach past
        the segment into the decode's margins)."""
        g = self.grid
        if isinstance(key, tuple):
            return g.wide_start + key[1] / g.sample_rate
        return g.start + key / g.sample_rate

    def audio_inputs(self, keys, seconds: float) -> tuple[dict, dict]:
        """(waves, mels) of audio keys (see ``audio_time``): the grid's keys as waves; the wide
        keys (the sync offset search: 31 clips per window, 0.04 s apart) as ImageBind mels
        made together from one fbank per phase (``decoding.mel.imagebind_mels_at``; one
        fbank per clip was 3/4 of the search's CPU)."""
        from decoding.mel import imagebind_mels_at
        wide = [k for k in keys if isinstance(k, tuple)]
        n = int(round(seconds * self.grid.sample_rate))
        mels = dict(zip(wide, imagebind_mels_at(self.grid.wide_audio, [k[1] for k in wide], n))) if wide else {}
        return {k: self.audio_at(k, seconds) for k in keys if not isinstance(k, tuple)}, mels

    def per_window(self, alive: list[int], fn: Callable[[int], None]) -> dict[int, str]:
        """``fn(k)`` for each window; {k: error note} for those that raised (one bad window
        must not lose the others' scores)."""
        errors = {}
        for k in alive:
            try:
                fn(k)
            except Exception as e:  # noqa: BLE001 - the note says what went wrong
                errors[k] = error_note(e)
        return errors

    def embed_missing(self, cache: dict, keys: Iterable, load: Callable[[list], np.ndarray],
                      embed: Callable[[np.ndarray], np.ndarray]) -> None:
        """Embed, in one model call, the distinct ``keys`` not in ``cache`` yet (first-seen
        order); ``load(todo)`` gives the model inputs for ``todo``."""
        todo = [k for k in dict.fromkeys(keys) if k not in cache]
        if not todo:
            return
        emb = np.asarray(embed(load(todo)))
        if emb.shape[0] != len(todo):
            raise ValueError(f"model returned {emb.shape[0]} embeddings for {len(todo)} inputs")
        cache.update(zip(todo, emb))
