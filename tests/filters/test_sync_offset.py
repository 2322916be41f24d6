"""The paper's classifier's own offset (issue 27): the argmax over its 31 audio shifts per
window, the clip's mode with its agreement share, the wide audio the shifts are cut from."""
from __future__ import annotations

import math

import numpy as np
import pytest

from curate.demo.synth import make_event_video
from curate.selection.merge import merge_table, merge_windows
from decoding.media import AUDIO_MARGIN, decode_grid
from filters import sampling
from filters.sync import clip_agreement, clip_offset, offset_of
from manifests import schemas

SHIFTS = sampling.offset_shifts_s()


def test_the_shift_grid_is_the_papers_test_protocol():
    # seed 003 section 1.3: 31 clips 0.04 s apart over [-0.6, 0.6] s
    assert len(SHIFTS) == 31 and SHIFTS[0] == -0.6 and SHIFTS[15] == 0.0 and SHIFTS[-1] == 0.6
    assert np.allclose(np.diff(SHIFTS), 0.04)


def test_offset_is_the_argmax_with_synchformers_sign():
    phis = [0.0] * 31
    phis[SHIFTS.index(0.28)] = 3.0      # the audio matches best when taken 0.28 s later
    off, p = offset_of(phis)
    assert off == -0.28                  # late audio: negative, as Synchformer's offsets
    assert p == pytest.approx(math.exp(3.0) / (math.exp(3.0) + 30))
    phis[SHIFTS.index(-0.6)] = 4.0
    assert offset_of(phis)[0] == 0.6
    # shifts not available are left out of the softmax, never counted as a score
    some = [None] * 31
    some[15], some[16] = 1.0, 0.0
    off, p = offset_of(some)
    assert off == 0.0 and p == pytest.approx(math.e / (math.e + 1))
    with pytest.raises(ValueError):
        offset_of([None] * 31)
    with pytest.raises(ValueError):
        offset_of([0.0] * 30)


def test_clip_offset_is_the_mode_nearest_zero_on_ties():
    assert clip_offset(np.array([-0.4, -0.4, 0.2, -0.4, 0.0])) == -0.4
    assert clip_agreement(np.array([-0.4, -0.4, 0.2, -0.4, 0.0])) == pytest.approx(0.6)
    assert clip_offset(np.array([0.2, -0.12, 0.2, -0.12])) == -0.12      # tie: nearest 0
    assert clip_offset(np.array([0.12, -0.12])) == -0.12                 # then the lower
    assert clip_agreement(np.array([0.12, -0.12])) == 0.5


def test_wide_audio_keeps_the_decode_margins(tmp_path):
    path = tmp_path / "ev.mp4"
    make_event_video(path, 8.0, [1.0, 2.5, 4.0, 5.5], seed=1)
    g = decode_grid(path, 0.0, 4.0, offset=2.0)          # a segment [2, 6) of the file
    assert g.wide_start == -AUDIO_MARGIN
    assert g.wide_extent[0] <= -AUDIO_MARGIN + 1e-3 and g.wide_extent[1] >= 4.0 + AUDIO_MARGIN - 1e-3
    # inside the segment the wide track is the grid's own mono audio, sample for sample
    i0 = int(round(AUDIO_MARGIN * g.sample_rate))
    assert np.array_equal(g.wide_audio[i0:i0 + g.audio.shape[0]], g.audio)
    # before the segment it holds the file's audio (the click at 1.0 s + beep: not silence)
    assert g.wide_slice(-0.2, 0.1) is not None
    # at the file's start there is nothing before: no clip, never a slid or padded one
    g0 = decode_grid(path)
    assert g0.wide_slice(-0.1, 2.0) is None and g0.wide_slice(0.0, 2.0) is not None
    assert g0.wide_slice(7.0, 2.0) is None


@pytest.fixture(scope="module")
def demo_scorer():
    from filters.sync import SyncScorer
    from sync_classifier.model import DEMO_CHECKPOINT
    return SyncScorer.from_checkpoint(str(DEMO_CHECKPOINT))


#: irregular events (a regular beat would make shifts of one period alike)
EVENTS = [-0.7, 0.3, 1.1, 1.5, 2.6, 3.2, 4.5, 4.9, 6.1, 7.0, 7.4, 8.3]


def _window_offsets(tmp_path, scorer, audio_offset: float) -> list[float]:
    from curate.ops.scoring import Scorers, score_segment
    path = tmp_path / f"ev_{audio_offset}.mp4"
    make_event_video(path, 8.0, EVENTS, audio_offset=audio_offset, seed=3)
    wins = [{"start": float(s), "end": float(s) + 3.0} for s in range(0, 6)]
    rows = score_segment(decode_grid(path), wins, Scorers(sync=scorer),
                         {"sync": {"a2v_min": 0.0, "v2a_min": 0.0}}, None, only={"sync"}, gate={"sync"})
    assert all(r["sync_note"] is None for r in rows), rows[0]["sync_note"]
    return [r["sync_offset_s"] for r in rows]


@pytest.mark.slow          # three 8-s files scored (about 15 s each on an idle CPU; a minute loaded)
@pytest.mark.parametrize("audio_offset", [0.4, -0.4, 0.0])
def test_demo_classifier_recovers_a_known_shift(tmp_path, demo_scorer, audio_offset):
    """The shipped demo classifier (trained with 0.25-s shifts on generated events) finds the
    clip's offset within the paper's tolerance (+-5 steps, 0.2 s) and with the right sign; the
    truth comes from how the file was made (sounds ``audio_offset`` s after their flashes)."""
    offs = _window_offsets(tmp_path, demo_scorer, audio_offset)
    truth = -audio_offset                     # late audio is a negative offset
    mode = clip_offset(np.array(offs))
    assert abs(mode - truth) <= 0.2 + 1e-9, (offs, truth)
    near = sum(abs(o - truth) <= 0.2 + 1e-9 for o in offs)
    assert near >= len(offs) / 2, (offs, truth)


def _win(k: int, start: float, off: float, p: float, shot: str = "s0") -> dict:
    return {"window_id": f"w{k}", "source_id": "src", "shot_id": shot, "class_name": "dog",
            "split": "train", "start": start, "end": start + 3.0, "status": "ok",
            "error": None, "sync_a2v": 0.5, "sync_v2a": 0.6, "sync_offset_s": off, "sync_offset_p": p}


def test_merged_clip_carries_mode_agreement_and_mean_probability():
    import pyarrow as pa
    ws = [_win(0, 0.0, -0.4, 0.2), _win(1, 0.5, -0.4, 0.4), _win(2, 1.0, 0.12, 0.3),
          _win(3, 1.5, -0.4, 0.1), _win(4, 10.0, 0.2, 0.5)]
    dec = [{"window_id": w["window_id"], "keep": True, "reason": None} for w in ws]
    rows = merge_windows(ws, dec, None, min_len=2.0)
    first = rows[0]
    assert first["sync_offset_s"] == -0.4 and first["sync_offset_agree"] == 0.75
    assert first["sync_offset_p"] == pytest.approx(0.25)
    assert first["sync_a2v"] == pytest.approx(0.5)                    # the others: the mean
    assert rows[1]["sync_offset_s"] == 0.2 and rows[1]["sync_offset_agree"] == 1.0
    # the columnar merge gives the same clips
    table = pa.Table.from_pylist([{c: w.get(c) for c in schemas.WINDOWS.names} for w in ws],
                                 schema=schemas.WINDOWS)
    clips = merge_table(table, [True] * len(ws), None, min_len=2.0).to_pylist()
    for a, b in zip(rows, clips):
        for c in ("sync_offset_s", "sync_offset_agree", "sync_offset_p"):
            assert a[c] == b[c], c


def test_shifted_mels_from_one_fbank_match_each_clips_own():
    import torch
    from decoding.mel import imagebind_mel, imagebind_mels_at
    rng = np.random.default_rng(0)
    wave = (0.3 * rng.standard_normal(16000 * 5)).astype(np.float32) + 0.05    # a DC offset too
    starts = [1000 + 640 * k for k in range(31)] + [3333, 3333 + 1280]          # two phases
    got = imagebind_mels_at(wave, starts)
    for s, m in zip(starts, got):
        ref = imagebind_mel(torch.from_numpy(wave[s:s + 32000]))
        assert m.shape == ref.shape == (1, 128, 204)
        assert float((m - ref).abs().max()) < 5e-4        # float rounding (normalised units, std ~1)
    with pytest.raises(ValueError):
        imagebind_mels_at(wave, [len(wave) - 100])


def test_the_offset_search_is_in_the_score_fingerprint():
    from curate.config.recipes import get_recipe
    from curate.stagekit.window_table import score_params
    run = {"recipe": get_recipe("demo"), "options": {"allow_random_weights": True}}
    params = score_params(run, ["sync"])
    assert params["filter_params"]["sync"]["offset_shifts_s"] == list(SHIFTS)


@pytest.mark.slow          # 11 windows of one 8-s file (a minute or two loaded)
def test_the_offset_search_leaves_p_sync_bits_as_they_were(tmp_path, demo_scorer):
    """P_sync's pairs are batched apart from the 31 shifted clips (batch composition moves
    low bits), so sync_a2v / sync_v2a are those of a call for P_sync alone, bit for bit: the
    paper's funnels cannot move by the offset search."""
    from curate.ops.scoring import Scorers, _start_frame, score_segment
    from filters import sync
    from filters.segment import Segment
    from sync_classifier.conventions import get_convention
    path = tmp_path / "ev.mp4"
    make_event_video(path, 8.0, EVENTS, audio_offset=0.0, seed=3)
    g = decode_grid(path)
    # 11 windows: enough clips that, batched together, the offset search's would share a
    # chunk with P_sync's (seen to move the last window's bits by 1e-8 without ``primary``)
    wins = [{"start": 0.5 * k, "end": 0.5 * k + 3.0} for k in range(11)]
    rows = score_segment(g, wins, Scorers(sync=demo_scorer), {"sync": {"a2v_min": 0.0, "v2a_min": 0.0}},
                         None, only={"sync"}, gate={"sync"})
    assert all(r["sync_offset_s"] is not None for r in rows)
    seg = Segment(g, [dict(w) for w in wins], [_start_frame(g, w) for w in wins], Scorers(sync=demo_scorer), None)
    kd = [sync._keys(seg, k) for k in range(len(wins))]
    pairs = list(dict.fromkeys(p for a, v in kd for p in sync._pairs(a, v)))
    phi = get_convention(demo_scorer.convention).segment_phi(seg, demo_scorer, pairs, sync.SYNC_CLIP)
    for r, (a, v) in zip(rows, kd):
        assert (r["sync_a2v"], r["sync_v2a"]) == sync.score(*sync.window_phi(phi, a, v))
