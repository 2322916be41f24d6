"""Repair is safe (issue 27): the decision to shift a clip's audio, from stored offsets only.

Both models must agree on one constant, non-zero delay, each above the confidence threshold;
anything else is never repaired. Delays follow ``curate.demo.synth`` (positive = audio late);
Synchformer's offsets (positive = audio ahead) are turned into delays by ``delay_of``.
"""
import pytest

from curate.selection.repair import (AGREE_TOL_S, CONSTANT_TOL_S, SF_STEP_S, confirm_by_shot,
                                     decide_repair, delay_of)

LATE = 0.6          # audio late by 0.6 s: Synchformer's offset -0.6 (audio behind)
SF = [delay_of(-0.6), delay_of(-0.6)]     # first and last context
P = [0.9, 0.8]


def _paper(d, n=5):
    return [d] * n, [0.9] * n


def test_agreeing_constant_offset_is_repaired_with_the_papers_delay():
    d, p = _paper(0.583)
    dec = decide_repair(SF, P, d, p)
    assert dec.repair and dec.delay_s == pytest.approx(0.583)
    assert "late" in dec.reason


def test_sign_synchformer_ahead_is_audio_early():
    # Synchformer +0.4 (audio runs ahead) = delay -0.4: the paper's classifier must say early too
    sf = [delay_of(0.4)] * 2
    assert decide_repair(sf, P, *_paper(-0.41)).delay_s == pytest.approx(-0.41)
    assert not decide_repair(sf, P, *_paper(+0.41)).repair


def test_disagreeing_models_are_not_repaired():
    dec = decide_repair(SF, P, *_paper(LATE + AGREE_TOL_S + 0.01))
    assert not dec.repair and "disagree" in dec.reason
    assert not decide_repair(SF, P, *_paper(-LATE)).repair


def test_offset_not_constant_over_windows_is_not_repaired():
    d, p = _paper(LATE)
    d[2] = LATE + CONSTANT_TOL_S + 0.02
    dec = decide_repair(SF, P, d, p)
    assert not dec.repair and "not constant" in dec.reason


def test_offset_not_constant_over_contexts_is_not_repaired():
    sf = [delay_of(-0.6), delay_of(-0.4)]
    dec = decide_repair(sf, P, *_paper(0.5))
    assert not dec.repair and "not constant" in dec.reason


def test_low_confidence_is_not_repaired():
    d, p = _paper(LATE)
    p[0] = 0.49
    assert not decide_repair(SF, P, d, p, min_window_prob=0.5).repair
    assert decide_repair(SF, P, d, p, min_window_prob=0.4).repair
    dec = decide_repair(SF, [0.9, 0.3], *_paper(LATE), min_prob=0.5)
    assert not dec.repair and "Synchformer" in dec.reason
    # each model against its own threshold: a window at 0.1 is confident for the classifier
    # (31 shifts 0.04 s apart share their mass), a context at 0.1 is not for Synchformer
    d, p = [LATE] * 5, [0.1] * 5
    assert decide_repair(SF, P, d, p).repair
    assert not decide_repair(SF, [0.1, 0.1], d, p).repair
    p[2] = 0.05
    assert "paper's classifier" in decide_repair(SF, P, d, p).reason


def _weak(d=LATE, n=3):
    """Windows that all read ``d`` below the classifier's bar (2/31)."""
    return [d] * n, [0.05] * n


def test_a_weak_clip_is_pending_only_when_every_other_rule_holds():
    dec = decide_repair(SF, P, *_weak())
    assert not dec.repair and "paper's classifier" in dec.reason
    assert dec.pending_s == pytest.approx(LATE) and dec.sf_delay_s == pytest.approx(LATE)
    assert decide_repair(SF, P, *_weak(LATE + AGREE_TOL_S + 0.01)).pending_s is None   # disagree
    d, p = _weak(n=4)
    d[1] = LATE + CONSTANT_TOL_S + 0.02
    assert decide_repair(SF, P, d, p).pending_s is None                              # not constant
    assert decide_repair(SF, [0.9, 0.3], *_weak()).pending_s is None                 # Synchformer unsure
    assert decide_repair([0.0, 0.0], P, *_weak(0.0)).pending_s is None               # in sync
    # below the bar and refused by another rule anyway: that rule is the reason given
    assert "in sync" in decide_repair([0.0, 0.0], P, *_weak(0.0)).reason
    assert "disagree" in decide_repair(SF, P, *_weak(LATE + AGREE_TOL_S + 0.01)).reason


def test_a_shots_confident_repair_confirms_its_weak_clips_at_the_same_offset():
    strong, weak = decide_repair(SF, P, *_paper(0.58)), decide_repair(SF, P, *_weak(0.62))
    early = decide_repair([delay_of(0.4)] * 2, P, *_paper(-0.4))     # another offset
    out = confirm_by_shot({"a": strong, "b": weak}, {"a": "s1", "b": "s1"})
    assert out["b"].repair and out["b"].delay_s == pytest.approx(0.62)   # its own windows' delay
    assert "another clip of its shot" in out["b"].reason and out["a"] == strong
    # no confident clip in its shot, one in another shot, or none with a shot: not repaired
    for shots in ({"a": "s1", "b": "s2"}, {"a": None, "b": None}, {"b": "s1"}):
        got = confirm_by_shot({k: v for k, v in {"a": strong, "b": weak}.items() if k in shots}, shots)
        assert not got["b"].repair
    # the shot's confident repair at another offset, or at two offsets: not repaired
    assert not confirm_by_shot({"a": early, "b": weak}, {"a": "s", "b": "s"})["b"].repair
    assert not confirm_by_shot({"a": strong, "c": early, "b": weak},
                               {"a": "s", "b": "s", "c": "s"})["b"].repair
    # a clip that fails another rule is never confirmed, whatever its shot holds
    bad = decide_repair(SF, P, *_weak(LATE + AGREE_TOL_S + 0.01))
    assert not confirm_by_shot({"a": strong, "b": bad}, {"a": "s", "b": "s"})["b"].repair


def test_in_sync_and_missing_are_not_repaired():
    assert "in sync" in decide_repair([0.0, 0.0], P, *_paper(0.05)).reason
    assert "no Synchformer" in decide_repair([None, None], [None, None], *_paper(LATE)).reason
    assert "paper's classifier" in decide_repair(SF, P, [], []).reason
    assert not decide_repair(SF, P, [LATE, float("nan")], [0.9, 0.9]).repair


def test_step_is_synchformers_grid():
    from filters.synchformer import offset_grid
    g = offset_grid()
    assert SF_STEP_S == pytest.approx(float(g[1] - g[0]), abs=1e-6)


def _windows(rows):
    import pyarrow as pa
    cols = ["window_id", "status", "amplitude", "sync_a2v", "sync_v2a", "sync_offset_s", "sync_offset_p"]
    return pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})


def test_candidates_are_windows_only_the_sync_gate_rejects_with_a_confident_offset():
    from curate.selection.repair import candidate_mask
    th = {"amplitude": {"min": 0.1}, "sync": {"a2v_min": 0.5, "v2a_min": 0.5}}
    gate, order = {"amplitude", "sync"}, ["amplitude", "sync"]
    t = _windows([("kept", "ok", 0.5, 0.9, 0.9, 0.0, 0.9),          # in sync: kept, no candidate
                  ("shifted", "ok", 0.5, 0.1, 0.2, -0.6, 0.8),      # candidate
                  ("unsure", "ok", 0.5, 0.1, 0.2, -0.6, 0.3),       # offset not confident
                  ("near0", "ok", 0.5, 0.1, 0.2, 0.04, 0.9),        # offset inside class 0
                  ("quiet", "ok", 0.01, 0.1, 0.2, -0.6, 0.9),       # amplitude rejects it too
                  ("failed", "failed", None, None, None, None, None)])
    assert candidate_mask(t, th, gate, order, 0.5).tolist() == [False, True, False, False, False, False]
    # no sync gate, or no offsets in the table: no candidate
    assert not candidate_mask(t, th, {"amplitude"}, order, 0.5).any()
    assert not candidate_mask(t.drop_columns(["sync_offset_s"]), th, gate, order, 0.5).any()


def test_select_merges_candidates_only_with_repair_on_and_keeps_the_decisions(tmp_path):
    """With repair on, candidates merge apart from the kept windows, in runs of one offset
    (one Synchformer class): a candidate touching a kept window stays out (the in-sync part
    ships as with repair off), a run at another offset touching a longer run gives way, and
    each candidate clip's windows are exactly one run."""
    from curate.config.recipes import get_recipe
    from curate.config.run import resolve
    from curate.stages.select import _clips
    from manifests.schemas import read_rows, write_manifest
    from sync_classifier.model import DEMO_CHECKPOINT
    from tests.selection.test_select import row

    # (start, in sync, offset, probability): 0.0-1.0 in sync; 3.5 off (touches the kept
    # 1.0-4.0); 5.0-6.0 off by -0.6; 6.5 off by +0.4 (another class, touching that run);
    # 10.0 off but unsure; 12.0-12.5 off by -0.56 / -0.64 (one class) far from the rest;
    # 20.0 off by +0.4 alone (not the shot's offset)
    plan = [(0.0, True, 0.0, 0.9), (0.5, True, 0.0, 0.9), (1.0, True, 0.0, 0.9),
            (3.5, False, -0.6, 0.9), (5.0, False, -0.6, 0.9), (5.5, False, -0.6, 0.9),
            (6.0, False, -0.6, 0.9), (6.5, False, 0.4, 0.9), (10.0, False, -0.6, 0.05),
            (12.0, False, -0.56, 0.9), (12.5, False, -0.64, 0.9), (20.0, False, 0.4, 0.9)]
    wins = []
    for i, (t, ok, off, p) in enumerate(plan):
        r = row(f"w{i:02d}", sync_a2v=0.5 if ok else 0.1, sync_offset_s=off, sync_offset_p=p)
        r.update(start=t, end=t + 3.0)
        wins.append(r)
    write_manifest(tmp_path, "windows", wins)
    sf = tmp_path / "synchformer.pt"      # where its weights are: select never reads them
    sf.write_bytes(b"")
    clips = {}
    for on in (False, True):
        recipe = get_recipe("demo")          # random weights allowed: no model file needed
        recipe["repair"]["enabled"] = on
        run = {"recipe": recipe, "options": {"allow_random_weights": True,
                                             "sync_checkpoint": str(DEMO_CHECKPOINT),
                                             "synchformer_checkpoint": str(sf)}}
        r = resolve(run)
        summary = {}
        clips[on] = _clips(tmp_path, r, summary).to_pylist()
        decisions = read_rows(tmp_path, "decisions")
        assert [d["keep"] for d in decisions] == [True] * 3 + [False] * 9     # the same decisions
    assert [(c["start"], c["end"]) for c in clips[False]] == [(0.0, 4.0)]
    assert [(c["start"], c["end"]) for c in clips[True]] == [(0.0, 4.0), (5.0, 9.0), (12.0, 15.5)]
    assert [c["n_windows"] for c in clips[True]] == [3, 3, 2]
    assert summary["repair_candidates"] == 8 and summary["repair_candidates_merged"] == 5
    # without Synchformer weights nothing could be repaired: no candidate takes a place
    run["options"].pop("synchformer_checkpoint")
    summary = {}
    got = _clips(tmp_path, resolve(run), summary).to_pylist()
    assert [(c["start"], c["end"]) for c in got] == [(0.0, 4.0)] and summary["repair_candidates"] == 0


def _runs_of(plan, cand=None):
    """candidate_runs on one shot of a 10-s source: (start, offset) per 3-s window, none kept."""
    import numpy as np
    import pyarrow as pa
    from curate.selection.repair import candidate_runs
    t = pa.table({"source_id": ["s"] * len(plan), "shot_id": ["s_shot0"] * len(plan),
                  "start": [float(a) for a, _ in plan], "end": [a + 3.0 for a, _ in plan],
                  "status": ["ok"] * len(plan), "sync_offset_s": [o for _, o in plan]})
    cand = np.ones(len(plan), dtype=bool) if cand is None else np.asarray(cand)
    got = candidate_runs(t, np.zeros(len(plan), dtype=bool), cand)
    return [a for (a, _), g in zip(plan, got) if g]


def test_a_run_the_cut_would_refuse_at_the_files_edge_gives_way_to_one_it_can_repair():
    """Runs at the shot's offset that would touch one another: the one whose shifted audio
    stays inside the source is kept, not the earliest (0.0-3.0 with the audio 0.4 s early
    would need audio from -0.4 s; 1.0-4.0 needs 0.6-3.6 s). Runs that touch none are all kept,
    even one the cut will refuse."""
    # offsets +0.4 (audio early: delay -0.4), a +0.24 window (another class) between them;
    # 5.0-8.0 is a run of its own (the 4.0 window is no candidate): kept too
    plan = [(0.0, 0.4), (0.5, 0.24), (1.0, 0.4), (4.0, 0.4), (5.0, 0.4)]
    assert _runs_of(plan, [True, True, True, False, True]) == [1.0, 5.0]
    # the source's end: audio late by 0.4 (offset -0.4); the longer run 6.5-10.0 would need
    # audio to 10.4 s, the shorter 5.5-8.5 stays inside
    assert _runs_of([(5.5, -0.4), (6.0, -0.24), (6.5, -0.4), (7.0, -0.4)]) == [5.5]
    # no edge in the way: the longest run, then the earliest, as before
    assert _runs_of([(2.0, 0.4), (2.5, 0.24), (3.0, 0.4), (3.5, 0.4)]) == [3.0, 3.5]
    assert _runs_of([(0.0, 0.0), (2.0, 0.4), (2.5, 0.24), (3.0, 0.4)], [False, True, True, True]) == [2.0]
    # a run alone is kept even when the cut will refuse it (the only chance of its shot)
    assert _runs_of([(0.0, 0.4), (0.5, 0.24)]) == [0.0]
