"""Counting what the scoring models are given: ``Counting`` wraps a scorer (CLIP, ImageBind,
sync, speech) and adds, per method, how many inputs each call received. Used by the cascade-order
tests and ``benchmarks/bench_scoring.py``."""
from __future__ import annotations

from collections import Counter


class Counting:
    """Counts the inputs each model method receives (frames, clips, pairs)."""

    def __init__(self, inner, counter: Counter, prefix: str):
        self.inner, self.counter, self.prefix = inner, counter, prefix

    def __getattr__(self, name):
        fn = getattr(self.inner, name)
        if not callable(fn) or name.startswith("_"):
            return fn

        def wrapped(*args, **kw):
            if name == "phi_pairs":  # distinct audio clips, video clips, pairs of a segment
                for what, a in zip(("audio_clips", "video_clips", "pairs"), args):
                    self.counter[f"sync.{what}"] += len(a)
                self.counter["sync.audio_clips"] += len(kw.get("mels") or {})   # ready mels
            elif name == "speech_probs":  # one call per segment: its seconds of audio
                self.counter[f"{self.prefix}.calls"] += 1
                self.counter[f"{self.prefix}.seconds"] += len(args[0]) / args[1]
            elif args:
                self.counter[f"{self.prefix}.{name}"] += len(args[-1])
            return fn(*args, **kw)
        return wrapped
