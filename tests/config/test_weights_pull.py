"""`curate models pull` against a loopback server: resume, verification, offline, licences.
No test reaches the internet: the table's URLs are swapped for 127.0.0.1 (``--base-url``)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config.weights import cache_path, get_weight, read_record, record_path
from curate.demo.loopback import LoopbackServer
from curate.ops.pull import PullError, pull

SIZE = 300_000


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    for var in ("CURATE_OFFLINE", "HF_HUB_OFFLINE"):     # --offline sets them: restored after
        monkeypatch.setenv(var, "0")


@pytest.fixture
def served(tmp_path):
    """Small random files under the table's file names, on a loopback server."""
    root = tmp_path / "www"
    root.mkdir()
    data = {}
    for name in ("imagebind-huge", "synchformer-mmaudio", "avid-cma-audioset"):
        w = get_weight(name)
        data[name] = np.random.default_rng(len(name)).bytes(SIZE)
        (root / Path(w.url).name).write_bytes(data[name])
    with LoopbackServer(root) as srv:
        yield srv, data


def test_pull_resumes_after_the_server_closes_mid_file(served):
    srv, data = served
    w = get_weight("imagebind-huge")
    name = Path(w.url).name
    srv.truncated.add(name)                  # the connection drops half way
    lines: list[str] = []
    with pytest.raises(PullError, match="rerun `curate models pull imagebind-huge` to resume"):
        pull(w, base_url=srv.base_url, echo=lines.append, retries=0)
    part = cache_path(w).with_name(f".{cache_path(w).name}.part")
    assert part.stat().st_size == SIZE // 2 and not cache_path(w).exists()
    srv.truncated.clear()
    path = pull(w, base_url=srv.base_url, echo=lines.append, retries=0)
    assert path.read_bytes() == data["imagebind-huge"] and not part.exists()
    # the second request asked only for the missing half
    assert [r.range for r in srv.requests if r.path == name] == [None, f"bytes={SIZE // 2}-"]
    rec = read_record(w)
    assert rec["sha256"] == hashlib.sha256(data["imagebind-huge"]).hexdigest()
    assert rec["size"] == SIZE
    # the non-commercial licence comes before the fetch
    assert lines[0].startswith("licence of imagebind-huge: CC BY-NC")
    assert any("fetching" in ln for ln in lines[1:])
    # a second pull fetches nothing
    n = len(srv.requests)
    pull(w, base_url=srv.base_url, echo=lines.append)
    assert len(srv.requests) == n


def test_progress_bar_counts_the_bytes(served, monkeypatch):
    import tqdm
    srv, _ = served
    seen = {}

    class Bar:
        def __init__(self, total=None, initial=0, **kw):
            seen.update(total=total, n=initial)

        def update(self, n):
            seen["n"] += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(tqdm, "tqdm", Bar)
    pull(get_weight("avid-cma-audioset"), base_url=srv.base_url, echo=lambda s: None)
    assert seen == {"total": SIZE, "n": SIZE}


def test_wrong_checksum_is_refused_and_not_used(served):
    srv, _ = served
    w = get_weight("synchformer-mmaudio")           # MMAudio publishes its md5
    with pytest.raises(PullError, match=r"md5 mismatch.*not used") as e:
        pull(w, base_url=srv.base_url, echo=lambda s: None)
    assert str(cache_path(w)) in str(e.value)
    assert not cache_path(w).exists() and read_record(w) is None
    assert not list(cache_path(w).parent.glob(".*.part"))


def test_size_mismatch_is_refused(served):
    srv, _ = served
    w = dataclasses.replace(get_weight("avid-cma-audioset"), size_bytes=SIZE + 1)
    with pytest.raises(PullError, match=f"size mismatch: {SIZE} bytes, published {SIZE + 1}"):
        pull(w, base_url=srv.base_url, echo=lambda s: None)
    assert not cache_path(w).exists() and not list(cache_path(w).parent.glob(".*.part"))


def test_offline_never_opens_a_socket(served, no_network, monkeypatch):
    srv, _ = served
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    with pytest.raises(PullError, match="offline"):
        pull(get_weight("imagebind-huge"), base_url=srv.base_url, echo=lambda s: None)
    res = CliRunner().invoke(app, ["models", "pull", "avid-cma-audioset", "--base-url", srv.base_url])
    assert res.exit_code == 1 and "offline" in res.output
    assert srv.requests == []
    with pytest.raises(PullError, match="not in open_clip's cache and offline"):
        pull(get_weight("clip-vit-b-32-openai"), echo=lambda s: None)


def test_file_copied_in_by_hand_is_checked_in_place(no_network, monkeypatch):
    monkeypatch.setenv("CURATE_OFFLINE", "1")
    w = get_weight("imagebind-huge")
    cache_path(w).parent.mkdir(parents=True, exist_ok=True)
    cache_path(w).write_bytes(b"weights")
    pull(w, echo=lambda s: None)
    assert read_record(w)["sha256"] == hashlib.sha256(b"weights").hexdigest()
    bad = get_weight("synchformer-mmaudio")
    cache_path(bad).write_bytes(b"not the published file")
    with pytest.raises(PullError, match="md5 mismatch"):
        pull(bad, echo=lambda s: None)
    assert cache_path(bad).exists() and read_record(bad) is None


def test_manual_weights_print_the_step_then_record_the_folder(tmp_path):
    w = get_weight("avsync-classifier")
    res = CliRunner().invoke(app, ["models", "pull", "avsync-classifier"])
    assert res.exit_code == 1
    assert "drive.google.com" in res.output and f"{cache_path(w)}/modules" in res.output
    (cache_path(w) / "modules" / "head").mkdir(parents=True)
    (cache_path(w) / "modules" / "head" / "x.bin").write_bytes(b"abc")
    res = CliRunner().invoke(app, ["models", "pull", "avsync-classifier"])
    assert res.exit_code == 0, res.output
    assert read_record(w)["sha256"] and json.loads(record_path(w).read_text())["size"] == 3


def test_models_list_shows_the_table_and_the_cache(served):
    srv, _ = served
    pull(get_weight("avid-cma-audioset"), base_url=srv.base_url, echo=lambda s: None)
    res = CliRunner().invoke(app, ["models", "list", "--json"])
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["avid-cma-audioset"]["cached"] and not rows["imagebind-huge"]["cached"]
    assert rows["synchformer-mmaudio"]["checksum"] == "md5:5b2f5594b0730f70e41e549b7c94390c"
    assert rows["imagebind-huge"]["checksum"] is None and rows["imagebind-huge"]["non_commercial"]
    text = CliRunner().invoke(app, ["models", "list"]).output
    assert "fix: curate models pull imagebind-huge" in text
