"""Score small, fetch full only for survivors: a loopback page offers four renditions of one
source (yt-dlp's generic extractor lists them as formats, as a site does); the small download
takes the smallest with short side >= 224, the shard stage fetches the full one (720p cap)
only for the sources of selected clips and cuts from it."""
from __future__ import annotations

import subprocess

import pytest

from curate.config.run_state import new_run
from curate.build import stage_value
from curate.ops.fetch import DownloadOptions, download_source
from curate.demo.loopback import LoopbackServer
from curate.config.recipes import get_recipe
from curate.execution.local import LocalExecutor
from decoding.media import probe
from manifests.schemas import read_rows, write_manifest
from shards.writer import key_from_name

SIZES = ("160x120", "320x240", "640x360", "1280x720")


def _page(sizes) -> str:
    tags = "".join(f'<source src="{{stem}}_{s}.mp4" type="video/mp4" res="{s.split("x")[1]}">'
                   for s in sizes)
    return f"<html><body><video controls>{tags}</video></body></html>"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    for stem, freq in (("a", 440), ("b", 660)):
        for s in SIZES:
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            f"testsrc=size={s}:rate=12:duration=4", "-f", "lavfi", "-i",
                            f"sine=frequency={freq}:duration=4", "-c:v", "libx264", "-pix_fmt",
                            "yuv420p", "-c:a", "aac", "-shortest", str(root / f"{stem}_{s}.mp4")],
                           check=True)
        (root / f"{stem}.html").write_text(_page(SIZES).replace("{stem}", stem))
    return root


def _gets(srv, name):
    return sum(r.method == "GET" for r in srv.requests if r.path == name)


def test_small_takes_the_smallest_rendition_at_least_224_full_the_capped_best(site, tmp_path):
    with LoopbackServer(site) as srv:
        row = {"source_id": "a_000000_000004", "url": srv.url("a.html"), "start": 0, "end": 4}
        small = download_source(row, tmp_path / "s", DownloadOptions(rendition="small", retries=0))
        full = download_source(row, tmp_path / "f", DownloadOptions(max_height=720, retries=0))
        capped = download_source(row, tmp_path / "c", DownloadOptions(max_height=480, retries=0))
        assert (small["width"], small["height"], small["rendition"]) == (320, 240, "small")
        assert (full["width"], full["height"], full["rendition"]) == (1280, 720, "full")
        assert (capped["width"], capped["height"]) == (640, 360)
        assert _gets(srv, "a_160x120.mp4") == 0           # below 224: never fetched
        assert abs(small["duration"] - full["duration"]) < 0.1
    with pytest.raises(ValueError):
        DownloadOptions(rendition="tiny")


def test_shard_stage_fetches_the_full_rendition_only_for_selected_clips(site, tmp_path):
    recipe = get_recipe("demo")
    recipe["download"].update(rendition="small", max_height=720)
    recipe["shards"]["max_short_side"] = 720
    out = tmp_path / "out"
    with LoopbackServer(site) as srv:
        src = tmp_path / "s.csv"
        src.write_text("id,url,start,end,label,split\n"
                       f"a,{srv.url('a.html')},0,4,dog,train\nb,{srv.url('b.html')},0,4,dog,train\n")
        run = new_run(out, recipe, {})
        stage_value("sources", out, run, sources=src)
        downloads = stage_value("download", out, run, LocalExecutor())
        assert [(d["width"], d["height"], d["rendition"]) for d in downloads] == [(320, 240, "small")] * 2
        assert _gets(srv, "a_1280x720.mp4") == _gets(srv, "b_1280x720.mp4") == 0
        # as if selection kept two clips of source a, none of b
        names = ["dog/a_000000_000004_0.0_2.0", "dog/a_000000_000004_1.5_3.5"]
        write_manifest(out, "selected", [
            {"key": key_from_name(n), "name": n, "clip_id": f"a_000000_000004_{k}", "source_id": "a_000000_000004",
             "class_name": "dog", "split": "train", "start": float(n.split("_")[-2]),
             "end": float(n.split("_")[-1]), "rank_score": 1.0, "status": "ok", "error": None}
            for k, n in enumerate(names)])
        stage_value("shard", out, run, LocalExecutor())
        assert _gets(srv, "a_1280x720.mp4") >= 1           # the survivor's full rendition ...
        assert _gets(srv, "b_1280x720.mp4") == 0           # ... and no other
        assert _gets(srv, "b_640x360.mp4") == _gets(srv, "b_160x120.mp4") == 0
    full = probe(out / "media" / "full" / "a_000000_000004.mp4")
    assert (full["width"], full["height"]) == (1280, 720)
    for n in names:
        clip = probe(out / "media" / "clips" / f"{key_from_name(n)}.mp4")
        assert (clip["width"], clip["height"]) == (1280, 720)   # cut from the full file
        assert abs(clip["duration"] - 2.0) < 0.1
    assert [s["status"] for s in read_rows(out, "selected")] == ["ok", "ok"]
    # the scores' rendition is on record: the downloads table says small, at 320x240
    assert {d["rendition"] for d in read_rows(out, "downloads")} == {"small"}
