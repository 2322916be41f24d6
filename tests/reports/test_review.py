"""Manual review page: served on loopback, clicked in headless Chromium, decisions refill."""
from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path

import pytest

from tests.selection.selecting import select_rows
from tests.browser import chrome, wait_for
from manifests.names import clip_id_for
from curate.reports.review import build_review_page, load_decisions, serve_review, write_review_page
from manifests.schemas import ALL_SCORES, write_manifest

PARAMS = {"select": {"per_class": 2, "test_per_class": 0, "balanced_test": False}}


def candidates() -> list[dict]:
    """2 classes x 3 candidates (distinct videos) with decreasing rank scores."""
    rows = []
    for cls in ("dog_barking", "hammering"):
        for i, s in enumerate((0.9, 0.6, 0.3)):
            src = f"{cls[:3]}Vid-{i}_000030_000040"
            row = {c: None for c in ALL_SCORES}
            row.update(clip_id=clip_id_for(src, 1.0, 4.5), source_id=src, shot_id=f"{src}_shot000",
                       class_name=cls, split="train", start=1.0, end=4.5, n_windows=2,
                       sync_a2v=s, sync_v2a=s, imagebind_ia=0.2, status="ok", error=None)
            rows.append(row)
    return rows


def make_mp4(path: Path) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc=size=64x48:rate=8:duration=1", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)


@pytest.fixture()
def run_dir(tmp_path: Path) -> tuple[Path, list[dict]]:
    rows, _ = select_rows(candidates(), PARAMS, seed=0)
    write_manifest(tmp_path, "selected", rows)
    clips = tmp_path / "media" / "clips"
    clips.mkdir(parents=True)
    for r in rows:                 # a file for every row, even the skipped third candidates
        make_mp4(clips / f"{r['key']}.mp4")
    (tmp_path / "secret.txt").write_text("not for the browser")
    return tmp_path, rows


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data, dict(resp.getheaders())


def test_reject_in_chromium_then_refill_with_next_ranked(run_dir, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    out, rows = run_dir
    ok = {r["name"]: r for r in rows if r["status"] == "ok"}
    best_dog = next(r for r in rows if r["source_id"].startswith("dogVid-0"))
    third_dog = next(r for r in rows if r["source_id"].startswith("dogVid-2"))
    keep_ham = next(r for r in rows if r["source_id"].startswith("hamVid-1"))
    assert best_dog["name"] in ok and third_dog["status"] == "skipped"
    decisions_path = out / "review_decisions.json"
    server = serve_review(out, decisions_path, port=0, block=False)
    driver = chrome(tmp_path)
    try:
        driver.get(server.url)
        shown = {e.get_attribute("data-name") for e in driver.find_elements(By.CSS_SELECTOR, "div.clip")}
        assert shown == set(ok)                              # only the selected clips
        assert driver.find_elements(By.CSS_SELECTOR, "video")[0].get_attribute("src").endswith(".mp4")
        driver.find_element(By.ID, f"reject-{best_dog['key']}").click()
        wait_for(lambda: load_decisions(decisions_path) == {best_dog["name"]: "reject"})
        driver.find_element(By.ID, f"keep-{keep_ham['key']}").click()
        wait_for(lambda: len(load_decisions(decisions_path)) == 2)
        card = driver.find_element(By.ID, f"clip-{best_dog['key']}")
        assert "reject" in card.get_attribute("class")
        driver.refresh()                                     # state comes back from the file
        wait_for(lambda: "reject" in driver.find_element(By.ID, f"clip-{best_dog['key']}")
                 .get_attribute("class"))
    finally:
        driver.quit()
        server.close()
    decisions = load_decisions(decisions_path)
    assert decisions == {best_dog["name"]: "reject", keep_ham["name"]: "keep"}
    refilled, summary = select_rows(candidates(), PARAMS, seed=0, decisions=decisions)
    dog_ok = {r["source_id"][:8] for r in refilled if r["status"] == "ok" and r["class_name"] == "dog_barking"}
    assert dog_ok == {"dogVid-1", "dogVid-2"}               # the next-ranked candidate came in
    assert {r["name"]: r["status"] for r in refilled}[best_dog["name"]] == "rejected"
    assert summary["per_class"]["dog_barking"]["selected"] == 2


def test_server_serves_only_selected_clips_and_refuses_foreign_requests(run_dir) -> None:
    out, rows = run_dir
    ok = next(r for r in rows if r["status"] == "ok")
    skipped = next(r for r in rows if r["status"] == "skipped")
    server = serve_review(out, out / "d.json", port=0, block=False)
    port = server.server_address[1]
    host = {"Host": f"127.0.0.1:{port}"}
    try:
        assert server.server_address[0] == "127.0.0.1"
        code, body, _ = request(port, "GET", f"/clips/{ok['key']}.mp4", headers=host)
        size = (out / "media" / "clips" / f"{ok['key']}.mp4").stat().st_size
        assert code == 200 and len(body) == size
        code, body, hdr = request(port, "GET", f"/clips/{ok['key']}.mp4",
                                  headers={**host, "Range": "bytes=10-19"})
        assert code == 206 and len(body) == 10 and hdr["Content-Range"] == f"bytes 10-19/{size}"
        for path in (f"/clips/{skipped['key']}.mp4", "/clips/../secret.txt", "/secret.txt",
                     "/clips/%2e%2e/secret.txt", "/media/clips/" + ok["key"] + ".mp4"):
            assert request(port, "GET", path, headers=host)[0] == 404, path
        assert request(port, "GET", "/", headers={"Host": "evil.example:80"})[0] == 403
        js = {**host, "Content-Type": "application/json"}
        assert request(port, "POST", "/decisions", json.dumps({ok["name"]: "reject"}).encode(),
                       {**js, "Origin": "http://evil.example"})[0] == 403
        assert request(port, "POST", "/decisions", json.dumps({ok["name"]: "reject"}).encode(),
                       {**host, "Content-Type": "text/plain"})[0] == 415
        assert request(port, "POST", "/decisions", json.dumps({skipped["name"]: "reject"}).encode(),
                       js)[0] == 400
        assert request(port, "POST", "/decisions", json.dumps({ok["name"]: "maybe"}).encode(),
                       js)[0] == 400
        assert not (out / "d.json").exists()                 # nothing bad was saved
        code, body, _ = request(port, "POST", "/decisions", json.dumps({ok["name"]: "keep"}).encode(), js)
        assert code == 200 and json.loads(body) == {"saved": 1}
        request(port, "POST", "/decisions", json.dumps({ok["name"]: None}).encode(), js)
        assert load_decisions(out / "d.json") == {}
    finally:
        server.close()


def test_static_page_links_clips_relatively_and_escapes_names(run_dir) -> None:
    out, rows = run_dir
    path = write_review_page(out)
    text = path.read_text()
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        assert f'src="media/clips/{r["key"]}.mp4"' in text
    assert '"mode": "static"' in text and 'id="download"' in text
    evil = dict(ok[0], name="x</script><b>", key="k")
    page = build_review_page([evil], lambda r: "a.mp4")
    assert "</script><b>" not in page and "&lt;/script&gt;&lt;b&gt;" in page
