"""score_segment: feature reuse (calls grow with seconds, not windows), cascade, notes."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from decoding.media import Grid, decode_grid
from curate.ops.scoring import Scorers, score_segment
from filters import pixel_diff, sampling
from manifests.schemas import ALL_SCORES, NOTE_COLUMNS, WINDOWS, to_table

torch.set_num_threads(1)
SR = 16000
SIZE = 16  # frames are tiny: the fakes do not care about 224


def make_grid(seconds: float, moving=lambda i: True, loud=lambda t: True, seed=0) -> Grid:
    """Frame i encodes its index in pixel (0, 0); moving frames are noisy, static ones flat."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 12))
    frames = np.full((n, SIZE, SIZE, 3), 128, np.uint8)
    for i in range(n):
        if moving(i):
            frames[i] = rng.integers(100, 140, (SIZE, SIZE, 3), dtype=np.uint8)
        frames[i, 0, 0] = (i % 256, i // 256, 0)
    t = np.arange(int(seconds * SR)) / SR
    audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio[[not loud(x) for x in t]] = 0.0
    return Grid(frames=frames, audio_channels=audio[None], start=0.0)


def windows(seconds: float, stride: float = 0.5, shot: str = "s_shot000") -> list[dict]:
    out, s = [], 0.0
    while s + 3.0 <= seconds + 1e-9:
        out.append({"window_id": f"s_{int(s * 1000):06d}", "source_id": "s", "shot_id": shot,
                    "class_name": "dog_barking", "split": "train", "start": s, "end": s + 3.0,
                    "status": "ok", "error": None})
        s += stride
    return out


def frame_id(f: np.ndarray) -> int:
    return int(f[0, 0, 0]) + 256 * int(f[0, 0, 1])


class FakeClip:
    """Features: the frame's index direction on a circle, so neighbours differ a little."""

    def __init__(self, fail=False):
        self.embedded: list[int] = []
        self.calls = 0
        self.fail = fail

    def embed(self, frames):
        self.calls += 1
        if self.fail:
            raise RuntimeError("CUDA out of memory (fake)")
        ids = [frame_id(f) for f in frames]
        self.embedded += ids
        a = np.array(ids, float) * 0.05
        return np.stack([np.cos(a), np.sin(a), np.ones_like(a)], 1).astype(np.float32)


class FakeImageBind:
    """Image, audio and text embeddings that give IA = 0.5, IT = 0.5 (passing)."""

    def __init__(self):
        self.images: list[int] = []
        self.audio_rms: list[float] = []
        self.audio_calls = 0
        self.texts: list[str] = []

    def embed_images(self, frames):
        self.images += [frame_id(f) for f in frames]
        return np.tile([1.0, 0.0, 0.0], (len(frames), 1))

    def embed_audio(self, waves):
        self.audio_calls += 1
        waves = np.asarray(waves)
        assert waves.shape[1:] == (2 * SR,)
        self.audio_rms += [float(np.sqrt((w ** 2).mean())) for w in waves]
        return np.tile([0.5, np.sqrt(0.75), 0.0], (len(waves), 1))

    def embed_text(self, names):
        self.texts += list(names)
        return np.tile([0.5, 0.0, np.sqrt(0.75)], (len(names), 1))


class FakeSync:
    """phi = 2 for the unshifted pair, 0 otherwise (P_sync = e^2 / (e^2 + 2) ~ 0.787)."""

    def __init__(self):
        self.pairs: list[tuple] = []

    def phi_pairs(self, audio, video, pairs, mels=None, primary=None):
        self.pairs += list(pairs)
        for k in audio:
            assert audio[k].shape == (2 * SR,)
        for k in video:
            assert video[k].shape == (12, SIZE, SIZE, 3)
            ids = [frame_id(f) for f in video[k]]
            assert ids == list(range(k, k + 24, 2))        # 12 frames at 6 fps from frame k
        return {(a, v): (2.0 if a == round(v * SR / 12) else 0.0) for a, v in pairs}


def all_fakes():
    """Fake CLIP / ImageBind / sync, and the real speech model (its weights ship with the
    silero-vad package; loaded in milliseconds)."""
    from filters.speech import SpeechScorer
    return Scorers(clip=FakeClip(), imagebind=FakeImageBind(), sync=FakeSync(),
                   silero=SpeechScorer.from_checkpoint())


NO_GATE: set[str] = set()


# ---------------------------------------------------------------- feature reuse

def test_every_column_filled_and_rows_fit_the_schema():
    g = make_grid(10)
    rows = score_segment(g, windows(10), all_fakes(), None, "dog barking", gate=NO_GATE)
    to_table(rows, WINDOWS)  # raises on unknown columns
    for r in rows:
        assert all(r[c] is not None for c in ALL_SCORES if not c.startswith("sync")), r
        assert r["imagebind_ia"] == pytest.approx(0.5) and r["imagebind_it"] == pytest.approx(0.5)
        assert r["pixel_diff_note"] is None and r["imagebind_note"] is None


def test_features_once_per_distinct_frame_cost_grows_with_seconds_not_windows():
    counts = {}
    for seconds in (10, 20):
        sc = all_fakes()
        ws = windows(seconds)
        score_segment(make_grid(seconds), ws, sc, None, "dog barking", gate=NO_GATE)
        # no grid frame is embedded twice, and only frames a window asks for
        assert len(sc.clip.embedded) == len(set(sc.clip.embedded))
        needed = {sampling.start_index(w["start"]) + o for w in ws for o in sampling.UNIFORM10_OFFSETS}
        assert set(sc.clip.embedded) == needed
        assert sc.clip.calls == 1                          # one batched call per segment
        assert len(sc.imagebind.images) == len(set(sc.imagebind.images))
        assert sc.imagebind.texts == ["dog barking"]
        assert len(sc.sync.pairs) == len(set(sc.sync.pairs)) == 5 * len(ws)
        counts[seconds] = (len(ws), len(sc.clip.embedded), len(sc.imagebind.images),
                           len(sc.imagebind.audio_rms))
    (w10, c10, i10, a10), (w20, c20, i20, a20) = counts[10], counts[20]
    assert c10 <= 12 * 10 < 10 * w10                       # <= one per grid frame, < naive
    assert c20 <= 12 * 20 < 10 * w20
    assert i10 == w10 + 4 and i20 == w20 + 4               # 3 per window shared: stride 0.5 s
    assert i10 < 3 * w10 and a10 < 3 * w10 and a20 < 3 * w20


def test_end_of_segment_window_slides_imagebind_audio_inside():
    g = make_grid(10, loud=lambda t: t < 8.0)   # last 2 s silent
    ws = [w for w in windows(10) if w["start"] == 7.0]
    sc = all_fakes()
    rows = score_segment(g, ws, sc, None, "dog barking", gate=NO_GATE)
    assert rows[0]["status"] == "ok" and rows[0]["pixel_diff"] is not None
    # frames 90, 102, 114: all inside the 120-frame grid; the last audio [8.5, 10.5) slid to
    # [8, 10): entirely silent, while [7.5, 9.5) still has 0.5 s of tone
    assert sorted(sc.imagebind.images) == [90, 102, 114]
    assert sc.imagebind.audio_rms[-1] == 0.0 and sc.imagebind.audio_rms[-2] > 0.1
    assert max(sc.clip.embedded) == 119


def test_window_at_the_end_of_a_shot_never_sees_the_next_shot():
    # shot A = frames 0..35 (flat, slowly brightening), shot B from frame 36 (black)
    g = make_grid(4, moving=lambda i: False)
    for i in range(36):
        g.frames[i, 1:] = 100 + i // 4
    g.frames[36:, 1:] = 0
    rows = score_segment(g, windows(4, shot="a"), all_fakes(), None, "x", gate=NO_GATE)
    inside, across = rows[0], rows[1]                      # [0, 3) and [0.5, 3.5)
    assert inside["pixel_diff"] < 0.01                     # only the 1/255-per-step ramp
    assert across["pixel_diff"] > 0.04                     # the cut to black is inside
    # hand-computed: pixel values 100 + i//4 at offsets 0,4,...,35 -> diffs of 1/255 except 0
    offs = np.array(sampling.UNIFORM10_OFFSETS)
    frames = g.frames[offs]
    assert inside["pixel_diff"] == pytest.approx(pixel_diff.score(frames))


# ---------------------------------------------------------------- cascade and notes

def test_cascade_skips_later_filters_with_notes_and_saves_model_calls():
    # first 5 s static (pixel_diff ~ 0 -> rejected), audio silent from 6 s
    g = make_grid(10, moving=lambda i: i >= 60, loud=lambda t: t < 6.0)
    sc = all_fakes()
    rows = score_segment(g, windows(10), sc, None, "dog barking")
    by = {r["start"]: r for r in rows}
    static = by[0.0]
    assert static["pixel_diff"] < 0.01 and static["amplitude"] is None
    for name in ("amplitude", "clip_diff", "imagebind", "sync"):
        assert static[f"{name}_note"] == "skipped: rejected by pixel_diff"
    silent = by[7.0]                                       # moving but [7, 10) silent
    assert silent["pixel_diff"] > 0.01 and silent["amplitude"] == 0.0
    assert silent["clip_diff_note"] == "skipped: rejected by amplitude"
    passed_pixels = [r for r in rows if r["pixel_diff_note"] is None and r["pixel_diff"] >= 0.01]
    assert 0 < len(passed_pixels) < len(rows)
    # CLIP only embedded frames of windows that survived pixel_diff and amplitude
    alive = [r for r in rows if r["clip_diff_note"] is None]
    need = {sampling.start_index(r["start"]) + o for r in alive for o in sampling.UNIFORM10_OFFSETS}
    assert set(sc.clip.embedded) == need and len(alive) < len(rows)
    for r in rows:
        if r["clip_diff_note"] is not None:
            assert r["clip_diff"] is None


def test_cascade_off_scores_everything():
    g = make_grid(10, moving=lambda i: i >= 60)
    rows = score_segment(g, windows(10), all_fakes(), None, "x", cascade=False)
    assert all(r["clip_diff"] is not None and r["imagebind_ia"] is not None for r in rows)


def test_missing_model_is_a_note_not_a_score_and_does_not_stop_the_window():
    g = make_grid(10)
    sc = Scorers(clip=None, imagebind=FakeImageBind(), sync=None)
    rows = score_segment(g, windows(10), sc, None, "x")
    for r in rows:
        assert r["clip_diff"] is None and r["clip_diff_note"] == "skipped: no clip_diff model"
        assert r["sync_note"] == "skipped: no sync model" and r["sync_a2v"] is None
        assert r["imagebind_ia"] is not None                # later filter still ran


def test_model_failure_is_recorded_and_gating_decides_whether_windows_go_on():
    g = make_grid(10)
    sc = Scorers(clip=FakeClip(fail=True), imagebind=FakeImageBind(), sync=None)
    rows = score_segment(g, windows(10), sc, None, "x")
    for r in rows:
        assert r["clip_diff"] is None and "out of memory" in r["clip_diff_note"]
        assert r["imagebind_note"] == "skipped: rejected by clip_diff"
        assert r["pixel_diff"] is not None                  # earlier scores kept
    rows = score_segment(g, windows(10), sc, None, "x",
                         gate={"pixel_diff", "amplitude", "imagebind", "sync"})
    assert all(r["imagebind_ia"] is not None for r in rows)  # score-only clip_diff stops nothing


def test_only_rescore_keeps_stored_scores_and_uses_them_to_gate():
    g = make_grid(10)
    first = score_segment(g, windows(10), Scorers(clip=None), None, "x")
    stored = [dict(r, pixel_diff=0.5) for r in first[:3]]     # fails pixel_diff (> 0.15)
    stored[0]["pixel_diff"] = 0.05                            # passes
    sc = all_fakes()
    rows = score_segment(g, stored, sc, None, "x", only={"clip_diff", "imagebind"},
                         gate={"pixel_diff", "clip_diff", "imagebind"})
    assert [r["pixel_diff"] for r in rows] == [0.05, 0.5, 0.5]        # untouched
    assert rows[0]["clip_diff"] is not None and rows[1]["clip_diff"] is None
    assert rows[1]["clip_diff_note"] == "skipped: rejected by pixel_diff"
    assert rows[0]["sync_note"] == first[0]["sync_note"]              # not in only: untouched
    with pytest.raises(ValueError):
        score_segment(g, stored, sc, None, "x", only={"no_such_filter"})


def test_bad_windows_fail_alone():
    g = make_grid(10)
    ws = windows(10)[:2] + [dict(windows(10)[0], window_id="late", start=9.0, end=12.0),
                            dict(windows(10)[0], window_id="short", start=1.0, end=2.0)]
    rows = score_segment(g, ws, all_fakes(), None, "x", gate=NO_GATE)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert "outside the decoded grid" in rows[2]["error"] and "not 3 s" in rows[3]["error"]
    assert all(rows[2][c] is None for c in ALL_SCORES)
    assert all(rows[2][n].startswith("error:") for n in NOTE_COLUMNS)
    assert rows[0]["pixel_diff"] is not None


def test_no_audio_stream_is_an_error_note():
    g = make_grid(10)
    g.has_audio = False
    rows = score_segment(g, windows(10)[:2], all_fakes(), None, "x")
    assert rows[0]["amplitude"] is None and "no audio" in rows[0]["amplitude_note"]
    assert rows[0]["clip_diff_note"] == "skipped: rejected by amplitude"


def test_sync_pairs_line_up_audio_and_video_on_real_decoded_media(tmp_path):
    """Decoded with ffmpeg: the sync fake checks every video clip is 12 frames at 6 fps, and
    P_sync comes out as e^2 / (e^2 + 2) when phi rewards the aligned pair only."""
    path = tmp_path / "v.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=64x48:rate=25", "-f", "lavfi", "-i", "sine=frequency=300",
                    "-t", "4", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-c:a", "aac",
                    "-shortest", str(path)], check=True)
    g = decode_grid(path, 0.0, 4.0)
    g.frames[:, 0, 0] = np.stack([np.arange(len(g.frames)) % 256, np.zeros(len(g.frames)),
                                  np.zeros(len(g.frames))], 1)
    g.frames = np.ascontiguousarray(g.frames[:, :SIZE, :SIZE])
    sc = all_fakes()
    rows = score_segment(g, windows(4), sc, None, "x", gate=NO_GATE)
    expected = np.exp(2) / (np.exp(2) + 2)
    for r in rows:
        assert r["sync_note"] is None, r["sync_note"]
        assert r["sync_a2v"] == pytest.approx(expected) and r["sync_v2a"] == pytest.approx(expected)
