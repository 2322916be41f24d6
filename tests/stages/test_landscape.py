"""The Landscape recipe: >= 1280x720 sources cut into non-overlapping 10-s clips, no
sync/alignment gating, a class-balanced test split, shards with the resolution capped."""
import subprocess

from curate.config.run_state import new_run
from curate.build import stage_value
from curate.config.recipes import get_recipe
from curate.execution.local import LocalExecutor
from curate.reports.stats import collect
from manifests.schemas import read_rows


def _video(path, size, seconds, hue):
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=8,hue=h={hue}", "-f", "lavfi", "-i",
                    "anoisesrc=color=pink:amplitude=0.3:sample_rate=16000", "-t", str(seconds),
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-shortest", str(path)], check=True)


def test_landscape_recipe(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = ["id,path,start,end,label,split"]
    plan = [("w1", "waterfall burbling", "1280x720", 20), ("w2", "waterfall burbling", "1280x720", 20),
            ("r1", "raining", "1920x1080", 20), ("r2", "raining", "1280x720", 30),
            ("small", "raining", "640x360", 20), ("x1", "not a landscape class", "1280x720", 20)]
    for i, (vid, label, size, sec) in enumerate(plan):
        _video(src / f"{vid}.mp4", size, sec, 40 * i)
        rows.append(f"{vid},{vid}.mp4,0,{sec},{label},")
    (src / "sources.csv").write_text("\n".join(rows) + "\n")

    out = tmp_path / "out"
    recipe = get_recipe("landscape")
    recipe["select"]["test_per_class"] = 2       # the default (10% of the smallest class) is 0 here
    run = new_run(out, recipe, {})
    ex = LocalExecutor()
    sources = stage_value("sources", out, run, sources=src / "sources.csv")
    assert [s["status"] for s in sources].count("rejected") == 1      # not a Landscape class
    downloads = {d["source_id"].split("_")[0]: d for d in stage_value("download", out, run, ex)}
    assert downloads["small"]["status"] == "failed" and downloads["small"]["reason"] == "too_small"
    assert all(downloads[v]["status"] == "ok" for v in ("w1", "w2", "r1", "r2"))

    summary = stage_value("select", out, run)
    assert "funnel" not in summary          # no windows, no scoring: fixed clips only
    clips = [c for c in read_rows(out, "clips") if c["status"] == "ok"]
    assert len(clips) == 2 + 2 + 2 + 3      # non-overlapping 10-s clips
    for c in clips:
        assert abs((c["end"] - c["start"]) - 10.0) < 1e-6 and c["start"] % 10 == 0
    sel = [s for s in read_rows(out, "selected") if s["status"] == "ok"]
    tests = {}
    for s in sel:
        if s["split"] == "test":
            tests[s["class_name"]] = tests.get(s["class_name"], 0) + 1
    assert tests == {"waterfall_burbling": 2, "raining": 2}        # the same number per class

    shard_rows = stage_value("shard", out, run, ex)
    assert len(shard_rows) == len(sel)
    from decoding.media import probe
    for p in (out / "media" / "clips").glob("*.mp4"):
        info = probe(p)
        assert min(info["width"], info["height"]) <= 1080 and abs(info["duration"] - 10.0) < 0.2
    st = collect(out)
    assert st["resolutions"]["raining"].get("1920x1080", 0) + st["resolutions"]["raining"].get("1280x720", 0) > 0
