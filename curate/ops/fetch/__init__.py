"""The download: one source row in, one DOWNLOADS row out (manifests/schemas.py).

A source is a URL (YouTube or any site yt-dlp knows, or a direct media file) or a local
path. The downloaded file keeps what the server sent: the source's own encoded streams,
stream-copied (no re-encode) from the keyframe at or before the segment start to the
segment end, *with the source's timestamps* (``-copyts``). So the segment [start, end) lies
at [seg_start, seg_end) on the file's own clock (``seg_start = start`` plus the source's own
start time), recorded in the DOWNLOADS row and in a sidecar ``<source_id>.json``; every later
stage addresses the segment by those times and the audio-video alignment of the source is
never touched before the final clip (``curate/ops/cut.py``):

- sites yt-dlp extracts (YouTube...): yt-dlp's ``download_ranges`` (its ffmpeg fetches only
  the range and stream-copies it; we add ``-copyts``), the source's start time taken as 0
  (DASH streams start at 0);
- direct media files (yt-dlp's generic extractor, e.g. our loopback server): the whole file
  is fetched with yt-dlp, then [start, end) is stream-copied with ffmpeg;
- local ``path`` rows: stream-copied from the file; no network.

mp4 edit lists are written on a movie time scale of ``MOVIE_TIMESCALE`` units per second
(a multiple of every common audio rate and video time scale), so a stream starting at 11.925333 s
keeps that start exactly (ffmpeg's default, 1/1000 s, would move each stream by up to 0.5 ms).
Only where a stream copy cannot be written (a codec mp4 cannot hold, a copy that misses
the start) is the segment re-encoded, then cut on a frame instant with both streams at the
same instant (``curate.ops.cut.cut_clip``): the file's clock then starts at 0 at that frame, and
the row's note (``error``, status ok) says ``re-encoded: <why>``.

``download_source`` never raises for a per-source problem: the row says ``status`` failed
and a ``reason`` (REASONS): e.g. ``no_video`` (audio-only), ``partial`` (``decoded 4.04 of
10.00 s``: the file stops before its own declared end), ``bot_check`` (``pass --cookies``),
``timeout`` (no byte for ``socket_timeout`` s; retried at most ``timeout_retries`` times),
``js_challenge`` (YouTube's JavaScript challenge unsolved: no JS runtime or no challenge-solver
scripts; the message names the fix, ``curate.ops.ytopts.JS_FIX``).
A source shorter than the segment asked for is ok with reason ``short`` and the note
``short: 5.0 of 10.0 s`` in ``error``. Transient failures are retried after the server's
Retry-After, else after a jittered exponential backoff, within ``max_wait`` seconds in all.
Output is written under a temp name in ``media_dir`` and renamed when complete, so a target
file is always whole; an existing target whose sidecar is of the current ``DOWNLOAD_FORMAT``
(and of its size) and that probes fine is returned as ``cached`` without touching the
network, which makes reruns resumable (a file of an older format is fetched again).

The modules, by job: ``options`` (``DownloadOptions``), ``plan`` (what a row asks for and the
checks of what came back), ``source`` (one source: attempts, retries, commit), ``ytdlp``
(the yt-dlp call), ``segment`` (the ffmpeg paths: stream copy, remux, re-encode), ``cache``
(the sidecar and the reuse of finished files), ``errors`` (reasons and their classification),
``rows`` (the DOWNLOADS row).
"""
from curate.ops.fetch.cache import DOWNLOAD_FORMAT, read_segment, sidecar_path
from curate.ops.fetch.errors import REASONS, parse_retry_after
from curate.ops.fetch.options import DEFAULT_MAX_HEIGHT, DownloadOptions
from curate.ops.fetch.rows import downloads_row
from curate.ops.fetch.source import download_source, retry_delay

__all__ = ["DEFAULT_MAX_HEIGHT", "DOWNLOAD_FORMAT", "REASONS", "DownloadOptions", "download_source",
           "downloads_row", "parse_retry_after", "read_segment", "retry_delay", "sidecar_path"]
