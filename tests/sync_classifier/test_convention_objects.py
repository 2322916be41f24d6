"""Issue 24 item 4: a convention is an object whose methods do the preprocessing; no code
outside ``sync_classifier/conventions.py`` branches on a convention's name; one vocabulary
(``ours`` / ``released``), the loader's older ``exact`` accepted with a DeprecationWarning."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from sync_classifier import conventions as C

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("curate", "filters", "shards", "sync_classifier", "decoding", "manifests",
           "benchmarks", "testkit", "scripts")
_NAME = r"""(?:\b(?:\w+\.)?(?:OURS|RELEASED)\b|["'](?:ours|released|exact)["'])"""
# a comparison with a convention's name, on either side, or a membership test among names
BRANCH = re.compile(rf"(?:==|!=|\bis\b|\bin\b)\s*[(\[{{]?\s*{_NAME}|{_NAME}\s*(?:==|!=)")


def branches(text: str) -> list[str]:
    """The lines of ``text`` that compare something with a convention's name."""
    return [line.strip() for line in text.splitlines()
            if BRANCH.search(line.split("#")[0])]


def test_the_branch_finder_finds_branches() -> None:
    for line in ('if conv == "released":', "if convention != 'exact':",
                 "if proto == conventions.RELEASED:", "ok = OURS == name",
                 'if self.convention in ("released", "x"):', "if c is RELEASED:"):
        assert branches(line) == [line], line
    for line in ('name: str = RELEASED', 'CONVENTIONS = {OURS: Ours()}',
                 'x = get_convention("released")', '# if conv == "released"'):
        assert branches(line) == [], line


def test_no_code_branches_on_a_convention_name() -> None:
    found = []
    files = [p for d in SCANNED for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 100
    for p in files:
        if p == ROOT / "sync_classifier" / "conventions.py":
            continue
        found += [f"{p.relative_to(ROOT)}: {line}" for line in branches(p.read_text())]
    assert not found, "branches on a convention name (call a Convention method instead):\n" + \
        "\n".join(found)


def test_every_step_is_done_by_each_convention() -> None:
    """Each convention implements every method the base declares (none left abstract in
    the base), and the names are the ones checkpoints and runs record."""
    steps = [n for n, f in vars(C.Convention).items()
             if callable(f) and not n.startswith("_") and n != "require_files"]
    assert {"segment_phi", "loader_window", "usable_sources", "eval_clips", "train_clips",
            "validation_clips", "generated_starts", "score_generated"} <= set(steps)
    for conv in C.CONVENTIONS.values():
        own = [n for n in steps if getattr(type(conv), n) is not getattr(C.Convention, n)]
        assert own == steps, (conv.name, set(steps) - set(own))
    assert sorted(C.CONVENTIONS) == ["ours", "released"]
    assert {c.name for c in C.CONVENTIONS.values()} == set(C.CONVENTIONS)
    assert C.get_convention(None) is C.CONVENTIONS["ours"]
    assert C.get_convention(C.CONVENTIONS["released"]) is C.CONVENTIONS["released"]


def test_the_loaders_old_spelling_is_ours_with_a_warning(tmp_path) -> None:
    from shards.loader import ClipDecoder
    with pytest.warns(DeprecationWarning, match="'exact'.*now called 'ours'"):
        assert C.get_convention("exact") is C.CONVENTIONS["ours"]
    with pytest.warns(DeprecationWarning, match="convention="):
        assert ClipDecoder(train=False, convention="exact").convention is C.CONVENTIONS["ours"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ClipDecoder(train=False).convention is C.CONVENTIONS["ours"]
        assert ClipDecoder(train=False, convention="released").convention is C.CONVENTIONS["released"]
    with pytest.raises(ValueError, match="unknown convention 'clean'.*ours or released"):
        ClipDecoder(train=False, convention="clean")


def test_the_released_convention_needs_files() -> None:
    C.get_convention("ours").require_files(None)       # generated events
    with pytest.raises(ValueError, match="reads video files: pass --data"):
        C.get_convention("released").require_files(None)
    C.get_convention("released").require_files(Path("videos"))


class _Seg:
    """What ``segment_phi`` reads of a ``filters.segment`` segment: a grid starting 0.5 s into
    a file that a stream copy placed ``offset`` s into its source."""

    def __init__(self, offset: float | None) -> None:
        from types import SimpleNamespace
        self.grid = SimpleNamespace(start=0.5, sample_rate=16000, fps=12)
        self.offset, self.path = offset, "clip.mp4"

    def audio_time(self, key: int) -> float:
        return self.grid.start + key / self.grid.sample_rate


class _Scorer:
    def __init__(self) -> None:
        self.calls = []

    def phi_released(self, path, audio_starts, video_starts, pairs, primary=None):
        self.calls.append((path, audio_starts, video_starts, pairs))
        return [float(i) for i in range(len(pairs))]


def test_released_scoring_reads_the_clips_at_file_times() -> None:
    """Audio key 8000 (0.5 s of samples) and video key 6 (0.5 s of 12-fps frames) of a grid
    that starts 0.5 s into a file placed 2 s into its source read the file at 3.0 s."""
    sc, pairs = _Scorer(), [(8000, 6), (16000, 6), (8000, 18)]
    phi = C.get_convention("released").segment_phi(_Seg(2.0), sc, pairs, (2.0, 2, 12))
    assert phi == {(8000, 6): 0.0, (16000, 6): 1.0, (8000, 18): 2.0}
    path, a, v, idx = sc.calls[0]
    assert path == "clip.mp4" and idx == [(0, 0), (1, 0), (0, 1)]
    assert a == pytest.approx([3.0, 3.5], abs=1e-12) and v == pytest.approx([3.0, 4.0], abs=1e-12)
    C.get_convention("released").segment_phi(_Seg(None), sc, pairs[:1], (2.0, 2, 12))
    assert sc.calls[1][1] == pytest.approx([1.0]) and sc.calls[1][2] == pytest.approx([1.0])


def test_released_sources_skip_videos_under_12_fps(tmp_path) -> None:
    """The released dataset asserts fps >= 12: its convention skips a 10-fps video, ours
    keeps it."""
    from curate.demo.synth import make_event_video
    from sync_classifier.data import find_sources
    make_event_video(tmp_path / "a24.mp4", duration=4.0, event_times=[1.0], fps=24)
    make_event_video(tmp_path / "b10.mp4", duration=4.0, event_times=[1.0], fps=10)
    offsets = (-0.2, 0.0, 0.2)
    ours, skipped = C.get_convention("ours").usable_sources(find_sources(tmp_path), offsets)
    assert [Path(s.path).name for s in ours] == ["a24.mp4", "b10.mp4"] and not skipped
    rel, skipped = C.get_convention("released").usable_sources(find_sources(tmp_path), offsets)
    assert [Path(s.path).name for s in rel] == ["a24.mp4"]
    assert [Path(s.source).name for s in skipped] == ["b10.mp4"] and "fps" in skipped[0].reason


def test_each_use_gets_the_conventions_dataset(tmp_path) -> None:
    """Training draws placements and flips (``train=True``), evaluation centres, validation
    places as the convention says; no item is decoded here."""
    from sync_classifier.data import ReleasedClipDataset, ShiftedClipDataset, VideoSource
    src, offs = [VideoSource(tmp_path / "v.mp4", 0.0, None, "v")], (-0.2, 0.0, 0.2)
    for name, kind in (("ours", ShiftedClipDataset), ("released", ReleasedClipDataset)):
        conv = C.get_convention(name)
        made = {"train": conv.train_clips(src, offs, 32, 0), "eval": conv.eval_clips(src, offs, 32, 7),
                "validation": conv.validation_clips(src, offs, 32)}
        assert {k: (type(d), d.train) for k, d in made.items()} == {
            "train": (kind, True), "eval": (kind, False), "validation": (kind, False)}, name
    rel = C.get_convention("released")
    assert rel.validation_clips(src, offs, 32).placement == rel.validation_placement == "uniform"
    assert rel.eval_clips(src, offs, 32, 7).placement == "compact"
