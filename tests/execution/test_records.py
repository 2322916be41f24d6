"""Checkpoint records prove themselves (issue 14, finding 1-2): a torn or garbled record is
not done and is redone; a part holding one is moved aside with a warning naming it; the rerun
gives the same rows as an uninterrupted run."""
import functools
import logging
import os

from curate.execution.checkpoints import Checkpoint, read_part, run_stage
from curate.execution.local import LocalExecutor
from curate.execution.spec import StageSpec


def _factory(calls):
    def fn(item):
        calls.append(item["key"])
        return {"rows": [{"k": item["key"], "i": j, "v": item["x"] * 10 + j} for j in range(3)]}
    return fn


def _err(item, error):
    return {"rows": [{"k": item["key"], "error": error}]}


def _items(n=6):
    return [{"key": f"s{i}", "x": i} for i in range(n)]


def _run(out, calls, **kw):
    spec = StageSpec("t", functools.partial(_factory, calls), _err)
    return run_stage(out, spec, _items(), LocalExecutor(), progress=False, **kw)


def _reference(tmp_path):
    ref = _run(tmp_path / "ref", [], flush_items=2)
    return ref.outputs["rows"]


def test_a_torn_last_line_is_redone_not_counted_done(tmp_path, caplog):
    want = _reference(tmp_path)
    out = tmp_path / "out"
    _run(out, [], flush_items=2)
    part = Checkpoint(out, "t").parts()[-1]
    data = part.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    # what a kill during a write or a full disk leaves: the last line cut in half; its key
    # and fingerprint are still readable at the start of the line
    part.write_bytes(data[: len(data) - len(last) // 2 - 1])
    assert b'"key": "s5", "fp": ' in part.read_bytes()
    calls = []
    with caplog.at_level(logging.WARNING):
        res = _run(out, calls)
    assert calls == ["s5"]                        # its item was not done: redone
    assert res.ran == 1 and res.skipped == 5
    assert res.outputs["rows"] == want            # every row back, in item order
    assert any(str(part) in r.getMessage() and "moved aside" in r.getMessage() for r in caplog.records)
    # the part now holds only sealed records; the torn one lies aside
    assert read_part(part)[1] == []
    assert len(list((out / "work" / "t" / "aside").iterdir())) == 1


def test_garbage_in_a_part_is_moved_aside_and_the_run_goes_on(tmp_path, caplog):
    want = _reference(tmp_path)
    out = tmp_path / "out"
    _run(out, [], flush_items=2)
    part = Checkpoint(out, "t").parts()[1]
    with part.open("ab") as f:
        f.write(os.urandom(300))                  # undecodable bytes, no valid record
    calls = []
    with caplog.at_level(logging.WARNING):
        res = _run(out, calls)
    assert calls == []                            # the part's sealed records still count
    assert res.outputs["rows"] == want
    msgs = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
    assert len(msgs) == 1 and str(part) in msgs[0]
    # a second rerun finds nothing to repair and nothing to do
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = _run(out, calls)
    assert again.ran == 0 and not [r for r in caplog.records if "moved aside" in r.getMessage()]


def test_a_record_with_a_changed_byte_is_not_a_record(tmp_path):
    out = tmp_path / "out"
    _run(out, [], flush_items=6)
    part = Checkpoint(out, "t").parts()[0]
    data = bytearray(part.read_bytes())
    i = data.index(b'"v": 21')                   # s2's second row
    data[i + 5:i + 7] = b"99"                     # same length, still valid JSON
    part.write_bytes(bytes(data))
    good, bad = read_part(part)
    assert [r["key"] for _i, r in good] == ["s0", "s1", "s3", "s4", "s5"] and bad == [2]
    calls = []
    res = _run(out, calls)
    assert calls == ["s2"]
    assert [r["v"] for r in res.outputs["rows"] if r["k"] == "s2"] == [20, 21, 22]


def test_an_unreadable_part_is_moved_aside(tmp_path, caplog):
    want = _reference(tmp_path)
    out = tmp_path / "out"
    _run(out, [], flush_items=2)
    part = Checkpoint(out, "t").parts()[0]
    part.write_bytes(b"\xff\xfe" * 200)          # nothing of it is a record
    calls = []
    with caplog.at_level(logging.WARNING):
        res = _run(out, calls)
    assert sorted(calls) == ["s0", "s1"]
    assert res.outputs["rows"] == want
    assert not part.exists() or read_part(part)[1] == []
    assert any(str(part) in r.getMessage() for r in caplog.records)
