"""Shared generated media for the tests (small, made on the spot, never downloaded).

Media helpers (grey ramps with a 1-kHz burst, flash/beep segments at any rate) live in
``testkit/avmedia.py``; fixtures made from them or from ``curate.demo.synth`` that several test
folders share live here:

- ``metrics_clips``: one reference clip and its three generated parts (head, center, tail)
  as the released metrics protocol reads them, made once per session (read only).
- ``add_filter_module``: registers a throwaway filter module for one test.
- ``served_copies``: three small event videos served on 127.0.0.1 (``LoopbackServer``, ids).

``no_network``: any connection a test opens raises (what "offline" promises).

Every test session gets its own empty weights cache (``$CURATE_HOME``): a developer's pulled
weights never change what a test resolves.
"""
from __future__ import annotations

from pathlib import Path
import pytest


@pytest.fixture(scope="module")
def served_copies(tmp_path_factory: pytest.TempPathFactory):
    from curate.demo.loopback import LoopbackServer
    from tests.avmedia import event_video_copies

    root = tmp_path_factory.mktemp("www")
    ids = event_video_copies(root, 3)
    with LoopbackServer(root) as srv:
        yield srv, ids


@pytest.fixture
def no_network(monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("a test opened a network connection")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="session", autouse=True)
def _empty_weights_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURATE_HOME", str(tmp_path_factory.mktemp("curate_home")))
        mp.delenv("CURATE_OFFLINE", raising=False)
        mp.delenv("CURATE_WEIGHTS_URL", raising=False)
        yield


@pytest.fixture(scope="session")
def metrics_clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(generated root, reference root): ``<root>/dog_barking/clip.mp4`` (6 s, flashes at 1, 3
    and 5 s) and ``clip_{head,center,tail}.mp4`` (2 s each), flash/beep videos in sync."""
    from curate.demo.synth import make_event_video

    root = tmp_path_factory.mktemp("metrics_clips")
    ref, gen = root / "ref" / "dog_barking", root / "gen" / "dog_barking"
    ref.mkdir(parents=True)
    gen.mkdir(parents=True)
    make_event_video(ref / "clip.mp4", duration=6.0, event_times=[1.0, 3.0, 5.0], seed=3)
    for part, seed in (("head", 4), ("center", 5), ("tail", 6)):
        make_event_video(gen / f"clip_{part}.mp4", duration=2.0, event_times=[0.5, 1.5], seed=seed)
    return gen.parent, ref.parent


@pytest.fixture
def add_filter_module(tmp_path, monkeypatch):
    """``add_filter_module(name, source)``: writes a filter module into a folder of the
    ``filters`` package and finds the filters again; undone after the test."""
    import filters
    from filters import registry

    folder = tmp_path / "more_filters"
    folder.mkdir()
    monkeypatch.setattr(filters, "__path__", [*filters.__path__, str(folder)])

    def add(name: str, source: str) -> None:
        (folder / f"{name}.py").write_text(source)
        registry.refresh()
    yield add
    monkeypatch.undo()
    registry.refresh()
