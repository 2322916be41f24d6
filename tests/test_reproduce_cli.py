"""`curate reproduce`: an AVSync15 list turns into exactly those clips, through real yt-dlp
against a loopback server serving generated media named like the released list."""
import json
import subprocess
import sys

import av
import webdataset as wds

from curate.loopback import LoopbackServer
from curate.synth import make_event_video
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
