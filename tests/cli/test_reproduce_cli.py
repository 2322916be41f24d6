"""`curate reproduce`: an AVSync15 list turns into exactly those clips, through real yt-dlp
against a loopback server serving generated media named like the released list."""
import json
import subprocess
import sys

import av
import webdataset as wds

from curate.demo.loopback import LoopbackServer
from curate.demo.synth import make_event_video
from manifests.schemas import read_rows

LINES = [
    "dog_barking/AbC-dEf_GhI_000000_000010_2.5_6.0",
    "dog_barking/AbC-dEf_GhI_000000_000010_6.5_9.0",
    "playing_cello/XyZ_12345-a_000000_000010_0.0_3.0",
    "hammering/NoSuchVid00_000000_000010_1.0_4.0",        # not on the server: recorded failure
]


def test_reproduce_list_end_to_end(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for ytid in ("AbC-dEf_GhI", "XyZ_12345-a"):
        make_event_video(media / f"{ytid}.mp4", duration=10.0, event_times=[1.0, 3.0, 5.5, 8.0], seed=1)
    lst = tmp_path / "test.txt"
    lst.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "out"
    with LoopbackServer(media) as server:
        template = server.base_url + "{ytid}.mp4"
        p = subprocess.run([sys.executable, "-m", "curate.cli", "reproduce", str(lst), "--out", str(out),
                            "--url-template", template, "--executor", "local"],
                           capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    selected = read_rows(out, "selected")
    assert [s["name"] for s in selected] == LINES
    assert [s["status"] for s in selected] == ["ok", "ok", "ok", "failed"]
    assert all(s["split"] == "test" for s in selected[:3])
    assert selected[3]["error"]
    got = {}
    for sample in wds.WebDataset(str(out / "shards" / "test-000000.tar"), shardshuffle=False):
        meta = json.loads(sample["json"])
        import io
        with av.open(io.BytesIO(sample["mp4"])) as c:
            dur = float(c.duration / av.time_base)
        got[meta["name"]] = (meta["clip_start"], meta["clip_end"], dur)
    assert set(got) == set(LINES[:3])
    for name, (cs, ce, dur) in got.items():
        assert name.endswith(f"_{cs}_{ce}") and abs(dur - (ce - cs)) < 0.1, (name, dur)


# ---------------------------------------------------------------- the released list form

# 6 segments x 5 clips = 30 lines shaped like the release: `class_dir/name.mp4`, ytids with
# '-' and '_', times like 2.5 / 6.0 / 10.0 / 3.25, clips shorter than 3 s, and one segment
# with clips in both train and test (downloaded once, each clip in its own split)
SEGMENTS = [
    ("dog_barking", "dog barking", "AbC-dEf_GhI", 3),
    ("playing_violin__fiddle", "playing violin, fiddle", "_x9-Yz_Q0wE", 0),
    ("hammering", "hammering", "Zz_9__zz-aa", 12),
    ("lions_roaring", "lions roaring", "L1on-Roar_0", 5),
    ("frog_croaking", "frog croaking", "fr0g_CROAK-", 20),
    ("baby_babbling__crying", "baby babbling, crying", "B-a_b-y_123", 15),
]
CLIP_TIMES = [("0.0", "3.0"), ("2.5", "6.0"), ("6.5", "10.0"), ("1.25", "2.5"), ("3.5", "5.2")]


def _release_lines() -> tuple[list[str], list[str]]:
    """(train lines, test lines) with .mp4; the last segment's last two clips are test."""
    train, test = [], []
    for k, (cls, _, ytid, s) in enumerate(SEGMENTS):
        for j, (cs, ce) in enumerate(CLIP_TIMES):
            line = f"{cls}/{ytid}_{s:06d}_{s + 10:06d}_{cs}_{ce}.mp4"
            (test if (k in (1, 5) and j >= 3) else train).append(line)
    return train, test


def _run_reproduce(tmp_path, lists, out, media):
    with LoopbackServer(media) as server:
        p = subprocess.run([sys.executable, "-m", "curate.cli", "reproduce", *map(str, lists),
                            "--out", str(out), "--url-template", server.base_url + "{ytid}.mp4",
                            "--executor", "local"], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]


def _shard_clips(out) -> dict[tuple[str, str], tuple[float, float, float, str]]:
    """(split, name) -> (clip_start, clip_end, media duration, mp4 sha256) over all shards."""
    import hashlib
    import io
    got = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(sample["json"])
            with av.open(io.BytesIO(sample["mp4"])) as c:
                dur = float(c.duration / av.time_base)
            key = (meta["split"], meta["name"])
            assert key not in got, key
            got[key] = (meta["clip_start"], meta["clip_end"], dur,
                        hashlib.sha256(sample["mp4"]).hexdigest())
    return got


def test_reproduce_released_list_form_and_csv_form_give_the_same_clips(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for _, _, ytid, s in SEGMENTS:   # the served video holds the segment [s, s + 10)
        make_event_video(media / f"{ytid}.mp4", duration=s + 10.0, size=(96, 64), seed=2,
                         event_times=[s + 1.0, s + 3.0, s + 5.5, s + 8.0])
    train, test = _release_lines()
    assert len(train) + len(test) == 30 and all(ln.endswith(".mp4") for ln in train + test)
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(test) + "\n")
    out_txt = tmp_path / "out_txt"
    _run_reproduce(tmp_path, [tmp_path / "train.txt", tmp_path / "test.txt"], out_txt, media)

    want = [(ln[:-4], "train") for ln in train] + [(ln[:-4], "test") for ln in test]
    selected = read_rows(out_txt, "selected")
    assert [(s["name"], s["split"]) for s in selected] == want
    assert all(s["status"] == "ok" for s in selected), [s["error"] for s in selected]
    assert len(read_rows(out_txt, "sources")) == len(SEGMENTS)     # each segment once
    got = _shard_clips(out_txt)
    assert sorted(got) == sorted((split, name) for name, split in want)
    for (split, name), (cs, ce, dur, _) in got.items():
        assert name.endswith(f"_{cs}_{ce}") and abs(dur - (ce - cs)) < 0.1, (name, dur)
    assert min(ce - cs for cs, ce, _, _ in got.values()) < 3.0       # short clips come out
    seg = SEGMENTS[1][2]                                              # in both splits
    assert {sp for sp, n in got if seg in n} == {"train", "test"}

    # the same list as a CSV (vid,label,split): vid without class folder, spoken labels
    label = {cls: lab for cls, lab, _, _ in SEGMENTS}
    rows = ["vid,label,split"]
    for name, split in want:
        cls, vid = name.split("/")
        rows.append(f'{vid},"{label[cls]}",{split}')
    (tmp_path / "avsync15.csv").write_text("\n".join(rows) + "\n")
    out_csv = tmp_path / "out_csv"
    _run_reproduce(tmp_path, [tmp_path / "avsync15.csv"], out_csv, media)
    selected_csv = read_rows(out_csv, "selected")
    assert [(s["name"], s["split"], s["status"]) for s in selected_csv] == \
        [(n, sp, "ok") for n, sp in want]
    got_csv = _shard_clips(out_csv)
    assert got_csv == got           # same clips, times, durations and bytes (deterministic cut)


def test_same_clip_listed_in_train_and_test_comes_out_in_both_shards(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    make_event_video(media / "AbC-dEf_GhI.mp4", duration=10.0, size=(96, 64), seed=3,
                     event_times=[1.0, 3.0, 5.5, 8.0])
    line = "dog_barking/AbC-dEf_GhI_000000_000010_2.5_6.0"
    other = "dog_barking/AbC-dEf_GhI_000000_000010_7.5_9.0"
    (tmp_path / "train.txt").write_text(f"{line}.mp4\n{other}.mp4\n")
    (tmp_path / "test.txt").write_text(f"{line}.mp4\n")
    out = tmp_path / "out"
    _run_reproduce(tmp_path, [tmp_path / "train.txt", tmp_path / "test.txt"], out, media)
    got = _shard_clips(out)
    assert sorted(got) == [("test", line), ("train", line), ("train", other)]
    assert got[("test", line)] == got[("train", line)]
