"""Source readers, names/ids and recipe class lists."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests.classes import (AVSYNC15, LANDSCAPE, LANDSCAPE_CLIPS_PER_CLASS, LANDSCAPE_FORMAT,
                               VGGSS, VGGSS_NAMES, recipe_classes, recipe_folders)
from manifests.schemas import SOURCES, to_table
from manifests.names import ClipName, format_clip_name, format_clip_time, parse_clip_name, safe_id, source_id
from manifests.source_lists import (class_key, detect_format, display_name, folder_name, read_avsync_clips,
                               read_avsync_list, read_generic, read_sources, read_vggsound_csv)


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


def _by_line(rows: list[dict], fname: str) -> dict[int, dict]:
    """Rows keyed by the line number in their error (rejected) — ok rows have no error."""
    out = {}
    for r in rows:
        if r["error"]:
            m = re.match(rf"{re.escape(fname)}:(?:row )?(\d+): ", r["error"])
            assert m, r["error"]
            out[int(m.group(1))] = r
    return out


def _schema_ok(rows: list[dict]) -> None:
    # every row fits the declared table (to_table raises on unknown columns / wrong types)
    assert to_table(rows, SOURCES).num_rows == len(rows)


# ------------------------------------------------------------------------- ids and names

@pytest.mark.parametrize("ok", ["AbCdEfGhIjK", "-0CqPLDTb0s", "a_b-c", "x" * 128])
def test_safe_id_accepts(ok):
    assert safe_id(ok) == ok


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "a b", "a.b", "x" * 129, "a\n", "é", None, 5])
def test_safe_id_rejects(bad):
    with pytest.raises(ValueError):
        safe_id(bad)


def test_class_key_and_folder_name():
    assert class_key("playing violin, fiddle") == "playing violin fiddle"
    assert class_key("Playing_Violin__Fiddle") == "playing violin fiddle"
    assert class_key("bee, wasp, etc. buzzing") == class_key("bee wasp etc. buzzing")
    assert class_key("dog bow-wow") == "dog bow wow"
    assert folder_name("playing violin, fiddle") == "playing_violin__fiddle"
    assert folder_name("Dog Barking") == "dog_barking"
    assert folder_name("dog bow-wow") == "dog_bow-wow"
    # our extension: characters outside [a-z0-9_-] are dropped so the folder is a safe id
    assert folder_name("bee, wasp, etc. buzzing") == "bee__wasp__etc_buzzing"
    assert folder_name("dog_barking") == "dog_barking"  # idempotent on folder names
    with pytest.raises(ValueError):
        folder_name(" ... ")
    assert display_name("playing_violin__fiddle") == "playing violin fiddle"
    assert display_name("dog_barking") == "dog barking"


def test_source_id():
    assert source_id("AbC-d_e", 30, 40) == "AbC-d_e_000030_000040"
    assert source_id("x", 30.0, 40.0) == "x_000030_000040"


REALISTIC = [
    "dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0",
    "baby_babbling_crying/-0CqPLDTb0s_000000_000010_0.0_10.0",
    "playing_violin_fiddle/a_b_c_000123_000133_3.25_5.5",  # ytid with '_'
    "hammering/_-_-_-_-_-_-_000001_000011_0.5_2.5",          # ytid of only '_' and '-'
    "toilet_flushing/Zz9_9-Yy8xw_000290_000300_7.0_10.0",
]


@pytest.mark.parametrize("name", REALISTIC)
def test_avsync_name_round_trip(name):
    parsed = parse_clip_name(name)
    assert parsed.name == name
    again = parse_clip_name(format_clip_name(parsed.class_name, parsed.ytid, parsed.seg_start,
                                                 parsed.seg_end, parsed.clip_start, parsed.clip_end))
    assert again == parsed


def test_avsync_name_fields():
    n = parse_clip_name("playing_violin_fiddle/a_b_c_000123_000133_3.25_5.5.mp4")
    assert n == ClipName("playing_violin_fiddle", "a_b_c", 123, 133, 3.25, 5.5)
    assert n.source_id == "a_b_c_000123_000133"
    assert parse_clip_name("AbC_000010_000020_1.0_4.0", class_name="dog_barking").class_name == "dog_barking"
    assert format_clip_name(None, "AbC", 10, 20, 1, 4) == "AbC_000010_000020_1.0_4.0"


def test_format_clip_time_minimal_decimal():
    assert [format_clip_time(t) for t in (2.5, 6, 10.0, 0, 3.25, 1 / 3)] == \
        ["2.5", "6.0", "10.0", "0.0", "3.25", "0.333"]
    for t in (0.0, 0.5, 2.5, 6.0, 9.999, 10.0):
        assert float(format_clip_time(t)) == t


@pytest.mark.parametrize("bad", [
    "dog/AbC_000030_000040_2.5",            # too few fields
    "dog/AbC_30_40_2.5_6.0",                # segment times not 6 digits
    "dog/AbC_000030_000040_x_6.0",          # clip time not a number
    "dog/../x_000030_000040_2.5_6.0",       # path in class
    "dog/Ab.C_000030_000040_2.5_6.0",       # unsafe ytid
    "d g/AbC_000030_000040_2.5_6.0",        # unsafe class
])
def test_avsync_name_rejects(bad):
    with pytest.raises(ValueError):
        parse_clip_name(bad)


# ------------------------------------------------------------------------- VGGSound CSV

VGG_CSV = """\
AbCdEfGhIjK,30,dog barking,train
-0CqPLDTb0s,0,"playing violin, fiddle",test
a_b-c_d,120,"bee, wasp, etc. buzzing",train
BadStart,3x,dog barking,train
BadSplit,10,dog barking,validation
,10,dog barking,train
../../etc,10,dog barking,train
AbCdEfGhIjK,30,dog barking,train
Other,10,people eating noodle,train
TooFew,10,train

FracStart,10.5,dog barking,train
NegStart,-10,dog barking,train
"""


def test_vggsound_reader_without_classes(tmp_path):
    rows = read_vggsound_csv(_write(tmp_path / "vggsound.csv", VGG_CSV))
    _schema_ok(rows)
    assert len(rows) == 12  # blank line skipped, nothing else dropped
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["source_id"] for r in ok] == ["AbCdEfGhIjK_000030_000040", "-0CqPLDTb0s_000000_000010",
                                            "a_b-c_d_000120_000130", "Other_000010_000020"]
    first = ok[0]
    assert (first["start"], first["end"], first["split"]) == (30.0, 40.0, "train")
    assert first["url"] == "https://www.youtube.com/watch?v=AbCdEfGhIjK"
    assert ok[1]["label"] == "playing violin, fiddle"          # comma kept via CSV quoting
    assert ok[1]["class_name"] == "playing_violin__fiddle"      # folder_name rule
    bad = _by_line(rows, "vggsound.csv")
    assert "unparseable start '3x'" in bad[4]["error"]
    assert "unknown split 'validation'" in bad[5]["error"]
    assert "empty id" in bad[6]["error"]
    assert "unsafe id '../../etc'" in bad[7]["error"]
    assert "duplicate id AbCdEfGhIjK_000030_000040 (first at vggsound.csv:1)" in bad[8]["error"]
    assert bad[8]["source_id"] == "AbCdEfGhIjK_000030_000040"
    assert "expected 4 columns" in bad[10]["error"]
    assert "not a whole number of seconds" in bad[12]["error"]
    assert "not a finite time >= 0" in bad[13]["error"]
    assert all(r["status"] == "rejected" for r in bad.values())
    assert set(bad) == {4, 5, 6, 7, 8, 10, 12, 13}


def test_vggsound_reader_with_recipe_classes(tmp_path):
    path = _write(tmp_path / "vggsound.csv", VGG_CSV)
    rows = read_vggsound_csv(path, classes=recipe_classes("avsync15"),
                             url_template="http://127.0.0.1:8000/{ytid}.mp4")
    ok = {r["source_id"]: r for r in rows if r["status"] == "ok"}
    # violin maps to the recipe folder (not folder_name of the raw label)
    assert set(ok) == {"AbCdEfGhIjK_000030_000040", "-0CqPLDTb0s_000000_000010"}
    assert ok["-0CqPLDTb0s_000000_000010"]["class_name"] == "playing_violin_fiddle"
    assert ok["AbCdEfGhIjK_000030_000040"]["url"] == "http://127.0.0.1:8000/AbCdEfGhIjK.mp4"
    bad = _by_line(rows, "vggsound.csv")
    assert "label not in recipe: 'bee, wasp, etc. buzzing'" in bad[3]["error"]
    assert "label not in recipe" in bad[9]["error"]
    # the same bee row is fine under VGGSS, whose seed spelling has no commas
    rows = read_vggsound_csv(path, classes=recipe_classes("vggss"))
    bee = next(r for r in rows if r["ytid"] == "a_b-c_d")
    assert bee["status"] == "ok" and bee["class_name"] == "bee_wasp_etc_buzzing"


def test_vggsound_reader_missing_and_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_vggsound_csv(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ValueError, match="bin.csv"):
        read_vggsound_csv(tmp_path / "bin.csv")


# ------------------------------------------------------------------------- AVSync lists

AVSYNC_TXT = """\
dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0
dog_barking/AbCdEfGhIjK_000030_000040_6.5_9.0
playing_violin_fiddle/a_b_c_000123_000133_3.25_5.5
dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0
not a name at all
hammering/Xy_000050_000040_1.0_3.0
hammering/Xz_000040_000050_8.0_12.0
cap_gun_shooting/AbCdEfGhIjK_000030_000040_1.0_3.0
noclass_000010_000020_1.0_3.0
"""


def test_avsync_txt_reader(tmp_path):
    path = _write(tmp_path / "train.txt", AVSYNC_TXT)
    rows = read_avsync_list(path)
    _schema_ok(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    # one source row per distinct segment; two clips of the same segment share it
    assert [r["source_id"] for r in ok] == ["AbCdEfGhIjK_000030_000040", "a_b_c_000123_000133"]
    assert ok[0]["class_name"] == "dog_barking" and ok[0]["split"] == "train"  # split from file name
    assert (ok[1]["start"], ok[1]["end"]) == (123.0, 133.0)
    bad = _by_line(rows, "train.txt")
    assert set(bad) == {4, 5, 6, 7, 8, 9}
    assert "duplicate id dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0 (first at train.txt:1)" in bad[4]["error"]
    assert "unparseable name" in bad[5]["error"]
    assert "end 40 <= start 50" in bad[6]["error"]
    assert "not inside the 10-s segment" in bad[7]["error"]
    assert "listed with class_name 'cap_gun_shooting', first as 'dog_barking'" in bad[8]["error"]
    assert "no class folder" in bad[9]["error"]
    # clip times are kept for merge/export: read them back
    clips = read_avsync_clips(_write(tmp_path / "ok.txt", "\n".join(AVSYNC_TXT.splitlines()[:3])))
    assert [c.name for c in clips] == AVSYNC_TXT.splitlines()[:3]


def test_avsync_txt_split_and_classes(tmp_path):
    path = _write(tmp_path / "list.txt", "dog_barking/AbC_000030_000040_2.5_6.0\n"
                                         "frog_croaking/DeF_000000_000010_1.0_4.0\n")
    rows = read_avsync_list(path, split="test", classes={class_key("dog barking"): "dog_barking"})
    assert [(r["status"], r["split"]) for r in rows] == [("ok", "test"), ("rejected", "test")]
    assert "label not in recipe" in rows[1]["error"]
    assert read_avsync_list(path, url_template=None)[0]["url"] == "https://www.youtube.com/watch?v=AbC"
    rows = read_avsync_list(path, split="holdout")
    assert all("unknown split 'holdout'" in r["error"] for r in rows)
    assert read_avsync_list(path)[0]["split"] is None  # no split known: assigned later


def test_avsync_csv_reader(tmp_path):
    path = _write(tmp_path / "avsync.csv", (
        "vid,label,split\n"
        "AbCdEfGhIjK_000030_000040,dog barking,train\n"
        "a_b_c_000123_000133_3.25_5.5,playing violin fiddle,test\n"
        "AbCdEfGhIjK_000030_000040_2.5_6.0,dog barking,train\n"
        "Bad_000030,dog barking,train\n"
        "Qq_000010_000020,dog barking,dev\n"
        ",dog barking,train\n"
        "Ww_000010_000020_3.0_12.0,dog barking,train\n"
    ))
    assert detect_format(path) == "avsync"
    rows = read_sources(path)
    _schema_ok(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    assert [(r["source_id"], r["class_name"], r["split"]) for r in ok] == [
        ("AbCdEfGhIjK_000030_000040", "dog_barking", "train"),
        ("a_b_c_000123_000133", "playing_violin_fiddle", "test"),
    ]
    bad = _by_line(rows, "avsync.csv")
    assert set(bad) == {5, 6, 7, 8}
    assert "unparseable vid 'Bad_000030'" in bad[5]["error"]
    assert "unknown split 'dev'" in bad[6]["error"]
    assert "empty id" in bad[7]["error"]
    assert "not inside the 10-s segment" in bad[8]["error"]
    with pytest.raises(ValueError, match="missing"):
        read_avsync_list(_write(tmp_path / "x.csv", "video,class\nA_000000_000010,dog\n"))


# ------------------------------------------------------------------------- generic

def test_generic_csv(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    path = _write(tmp_path / "mine.csv", (
        "id,url,path,start,end,label,split\n"
        "vid1,https://example.org/v1.mp4,,0,10,Thunderstorms,train\n"
        "vid1,https://example.org/v1.mp4,,10,20,Thunderstorms,train\n"
        "loc2,,media/loc2.mp4,0,10,raining,\n"
        "vid3,https://example.org/v3.mp4,,20,10,raining,train\n"
        "vid4,,,0,10,raining,train\n"
        "vid5,ftp://example.org/v5.mp4,,0,10,raining,train\n"
        "vid6,https://example.org/v6.mp4,,zero,10,raining,train\n"
        "vid1,https://example.org/v1.mp4,,0,10,Thunderstorms,train\n"
        "vid7,https://example.org/v7.mp4,,0,10,lava,train\n"
        "vid8,https://example.org/v8.mp4,,0,10,raining,dev\n"
        "vid9 x,https://example.org/v9.mp4,,0,10,raining,train\n"
    ))
    assert detect_format(path) == "generic"
    rows = read_sources(path, classes=recipe_classes("landscape"))
    _schema_ok(rows)
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["source_id"] for r in ok] == ["vid1_000000_000010", "vid1_000010_000020", "loc2_000000_000010"]
    assert ok[0]["class_name"] == "thunderstorms" and ok[0]["url"] == "https://example.org/v1.mp4"
    assert ok[2]["path"] == str((media / "loc2.mp4").resolve())   # relative to the manifest
    assert ok[2]["url"] is None and ok[2]["split"] is None
    bad = _by_line(rows, "mine.csv")
    assert set(bad) == {5, 6, 7, 8, 9, 10, 11, 12}
    assert "end 10 <= start 20" in bad[5]["error"]
    assert "neither url nor path" in bad[6]["error"]
    assert "unsupported url" in bad[7]["error"]
    assert "unparseable start 'zero'" in bad[8]["error"]
    assert "duplicate id vid1_000000_000010 (first at mine.csv:2)" in bad[9]["error"]
    assert "label not in recipe: 'lava'" in bad[10]["error"]
    assert "unknown split 'dev'" in bad[11]["error"]
    assert "unsafe id 'vid9 x'" in bad[12]["error"]


def test_generic_parquet(tmp_path):
    table = pa.table({
        "id": ["p1", "p2", "p1"], "path": ["a.mp4", "/abs/b.mp4", "a.mp4"],
        "start": [0, 0, 0], "end": [10, 10, 10],
        "label": ["dog barking", "cat meowing", "dog barking"], "split": ["train", "test", "train"],
    })
    pq.write_table(table, tmp_path / "m.parquet")
    rows = read_sources(tmp_path / "m.parquet")
    _schema_ok(rows)
    assert [r["status"] for r in rows] == ["ok", "ok", "rejected"]
    assert rows[0]["path"] == str((tmp_path / "a.mp4").resolve())
    assert rows[1]["path"] == "/abs/b.mp4" and rows[1]["class_name"] == "cat_meowing"
    assert rows[2]["error"].startswith("m.parquet:row 2: duplicate id p1_000000_000010")


def test_generic_missing_columns_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"lacks columns \['end', 'url or path'\]"):
        read_generic(_write(tmp_path / "g.csv", "id,start,label,split\nx,0,dog,train\n"))
    with pytest.raises(FileNotFoundError, match="gone.parquet"):
        read_generic(tmp_path / "gone.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="broken.parquet"):
        read_generic(tmp_path / "broken.parquet")
    with pytest.raises(ValueError, match="unknown source format"):
        read_sources(tmp_path / "g.csv", fmt="kinetics")


def test_detect_format(tmp_path):
    assert detect_format(_write(tmp_path / "vggsound.csv", VGG_CSV)) == "vggsound"
    assert detect_format(_write(tmp_path / "test.txt", AVSYNC_TXT)) == "avsync"
    rows = read_sources(tmp_path / "vggsound.csv", classes=recipe_classes("avsync15"))
    assert sum(r["status"] == "ok" for r in rows) == 2


# ------------------------------------------------------------------------- class lists

def test_avsync15_classes():
    folders = recipe_folders("avsync15")
    assert len(folders) == len(set(folders)) == 15
    # folder names are folder_name() of DESIGN section 2's display names
    design = ("baby babbling crying, cap gun shooting, chicken crowing, dog barking, frog croaking, "
              "hammering, lions roaring, machine gun shooting, playing cello, playing trombone, "
              "playing trumpet, playing violin fiddle, sharpen knife, striking bowling, toilet flushing")
    assert folders == [folder_name(n) for n in design.split(", ")]
    m = recipe_classes("avsync15")
    assert m[class_key("baby crying")] == m[class_key("baby babbling")] == "baby_babbling_crying"
    assert m[class_key("hammering nails")] == "hammering"
    assert m[class_key("playing violin, fiddle")] == "playing_violin_fiddle"
    assert class_key("dog bow-wow") not in m
    # every AVSync15 source label is a VGGSS class (AVSync15 is curated from VGGSS)
    vggss = recipe_classes("vggss")
    assert all(class_key(lbl) in vggss for rc in AVSYNC15 for lbl in rc.source_labels)


def test_vggss_classes():
    assert len(VGGSS_NAMES) == len(set(VGGSS_NAMES)) == 149
    assert len(VGGSS) == 149
    m = recipe_classes("vggss")
    assert len(set(m.values())) == 149
    assert all(safe_id(f) == f for f in m.values())
    for vgg_label in ("bee, wasp, etc. buzzing", "alligators, crocodiles hissing",
                      "playing steel guitar, slide guitar", "dog bow-wow", "tractor digging",
                      "woodpecker pecking tree", "eletric blender running"):
        assert class_key(vgg_label) in m, vgg_label


def test_landscape_classes():
    folders = recipe_folders("landscape")
    assert len(folders) == 9
    assert set(folders) == set(LANDSCAPE_CLIPS_PER_CLASS)
    assert sum(LANDSCAPE_CLIPS_PER_CLASS.values()) == 9280
    assert len(LANDSCAPE) == 9
    m = recipe_classes("landscape")
    assert m["waterfall bubbling"] == m["waterfall burbling"] == "waterfall_burbling"
    assert (LANDSCAPE_FORMAT["min_width"], LANDSCAPE_FORMAT["min_height"]) == (1280, 720)
    assert LANDSCAPE_FORMAT["clip_seconds"] * LANDSCAPE_FORMAT["clips_per_video"] == 100
    with pytest.raises(KeyError, match="unknown recipe"):
        recipe_classes("kinetics")
