"""Decoding with PyAV onto fixed grids.

A source segment is decoded once onto the analysis grid (12 fps, 224x224 centre crop,
16 kHz audio); every filter reads its samples from that grid. ``decode_clip`` is the general
form used by the trainer loader and the sync classifier.
"""
from __future__ import annotations

import bisect
import io
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

GRID_FPS = 12
#: the version of the grid decode's values (frames, audio): part of the score fingerprint, so
#: a decode that changes any decoded value rescores old runs once. Bump it with such a change
#: (tests/decoding/test_grid_decode.py pins the values of each version). 2: the segment's audio
#: alone is decoded (from a seek; older: from the file's start, resampled from there). 3: frames
#: converted in two passes through ``GRID_VIA`` (older: one pass to RGB). 4: the second pass
#: rounds accurately (``RGB_PASS_FLAGS``; grid-3's fast table conversion was biased by about
#: a level and moved decisions that sit at a threshold).
GRID_DECODE = "grid-4"
#: the format the score grid's frames are scaled into before RGB (``Scaler``)
GRID_VIA = "yuv422p"
#: swscale flags of the unscaled YUV -> RGB pass: ACCURATE_RND takes swscale's exact per-pixel
#: path (chroma interpolated at its coded siting) instead of its table conversion, which
#: truncates: within ~0.04 of a level on average of the one-pass conversion (grid-2) instead
#: of ~0.4-1.3, for ~0.16 ms more per 398x224 frame
RGB_PASS_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
#: pixels converted around a crop's edges in the RGB pass (``Scaler``)
CROP_MARGIN = 4
GRID_SIZE = 224
SAMPLE_RATE = 16000
#: a grid slot at time t shows the last source frame with pts <= t + PTS_SLACK (1 ms: absorbs
#: containers with millisecond time bases, e.g. a 30-fps frame at 66.67 ms stored as 67 ms).
#: filters.sampling keeps samples this far from a window's end because of it.
PTS_SLACK = 1e-3


#: seconds the video may end before the requested end / the audio before it is noted
SHORT_TOLERANCE = 0.25


def ffmpeg_fps_lead(fps: float) -> float:
    """``pick_lead`` that picks frames as ffmpeg's ``fps`` filter (rounding to the nearest
    output slot, halves up): slot n takes the last frame with pts < (n + 0.5) / fps. The
    slot test adds ``PTS_SLACK``; a frame exactly half a slot late is the next slot's."""
    return 0.5 / fps - PTS_SLACK - 1e-6


class DecodeError(RuntimeError):
    """The file could not be decoded (corrupt, truncated, no video stream...)."""


class NoVideoError(DecodeError):
    """The file has no video stream (audio-only): reason ``no_video``, not corrupt."""


@dataclass
class Grid:
    frames: np.ndarray          # uint8 [T, H, W, 3] RGB; frame i at start + i / fps
    audio_channels: np.ndarray  # float32 [C, N] in [-1, 1] at sample_rate; sample j at start + j / sr
    start: float
    fps: int = GRID_FPS
    sample_rate: int = SAMPLE_RATE
    has_audio: bool = True
    #: what a person should know about this decode, e.g. ``video_short: video 4.0 s, audio
    #: 10.0 s`` (the last frame was repeated to fill the grid)
    notes: list[str] = field(default_factory=list)
    #: where the decoded video really ends (seconds; frames after it repeat the last frame);
    #: None when the video covers the grid
    video_end: float | None = None
    #: the same audio on the source's own rate and channels, float32 ``[C, N]``, not clamped
    #: (``decode_grid``; ``filters.audio_quality`` reads bandwidth, clipping and identical
    #: channels from it, which the 16-kHz mix hides); None when not decoded
    native_audio: np.ndarray | None = None
    native_rate: int | None = None
    #: the mono mix of the same resampled audio with the decode's margins kept (``AUDIO_MARGIN``
    #: before and after, from the same decode): sample j at ``wide_start + j / sample_rate``;
    #: ``wide_extent`` the (start, end) times it really holds (zeros outside). The sync
    #: classifier's offset search shifts its audio past a window's edges; None when not kept
    wide_audio: np.ndarray | None = None
    wide_start: float = 0.0
    wide_extent: tuple[float, float] | None = None

    def native(self) -> tuple[np.ndarray, int]:
        """(audio ``[C, N]``, its rate): the native audio, else the grid's own."""
        if self.native_audio is not None and self.native_rate:
            return self.native_audio, int(self.native_rate)
        return self.audio_channels, self.sample_rate

    @property
    def audio(self) -> np.ndarray:
        """Mono mix, float32 [N]."""
        if self.audio_channels.shape[0] == 1:
            return self.audio_channels[0]
        return self.audio_channels.mean(axis=0).astype(np.float32)

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps

    @property
    def end(self) -> float:
        return self.start + self.duration

    def frame_index(self, t: float) -> int:
        """Nearest grid frame to absolute time ``t`` (clamped)."""
        i = int(round((t - self.start) * self.fps))
        return min(max(i, 0), len(self.frames) - 1)

    def frames_at(self, times) -> np.ndarray:
        return self.frames[[self.frame_index(t) for t in times]]

    def sample_index(self, t: float) -> int:
        return int(round((t - self.start) * self.sample_rate))

    def audio_slice(self, t0: float, t1: float, channels: bool = False) -> np.ndarray:
        """Audio in [t0, t1), slid inside the decoded range when it reaches past an edge.

        Zero-padded only when the whole grid is shorter than the request.
        """
        src = self.audio_channels if channels else self.audio[None]
        n = int(round((t1 - t0) * self.sample_rate))
        total = src.shape[1]
        i0 = self.sample_index(t0)
        i0 = min(max(i0, 0), max(total - n, 0))
        out = src[:, i0:i0 + n]
        if out.shape[1] < n:
            out = np.pad(out, ((0, 0), (0, n - out.shape[1])))
        return out if channels else out[0]

    def wide_slice(self, t0: float, seconds: float) -> np.ndarray | None:
        """The mono audio of ``[t0, t0 + seconds)`` from the wide track, or None when the span
        reaches past the audio the decode really holds (no sliding, no padding)."""
        if self.wide_audio is None or self.wide_extent is None:
            return None
        n = int(round(seconds * self.sample_rate))
        i0 = int(round((t0 - self.wide_start) * self.sample_rate))
        lo = int(round((self.wide_extent[0] - self.wide_start) * self.sample_rate))
        hi = int(round((self.wide_extent[1] - self.wide_start) * self.sample_rate))
        if i0 < max(lo, 0) or i0 + n > min(hi, self.wide_audio.shape[0]):
            return None
        return self.wide_audio[i0:i0 + n]


def _sar(stream) -> float:
    """Sample (pixel) aspect ratio of a video stream; 1 when unknown."""
    for v in (stream.codec_context.sample_aspect_ratio, getattr(stream, "sample_aspect_ratio", None)):
        if v:
            return float(v)
    return 1.0


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that make the frame upright (display matrix side data,
    which ffmpeg also fills from an old ``rotate`` tag); np.rot90 turns counter-clockwise,
    as ffmpeg's own autorotate does for the same matrix."""
    rot = getattr(frame, "rotation", 0) or 0
    return int(round(rot / 90.0)) % 4


def scaled_size(width: int, height: int, sar: float, short_side: int) -> tuple[int, int]:
    """(width, height) of a coded ``width x height`` frame stretched to its display aspect
    (sample aspect ratio ``sar``) with its short side ``short_side``."""
    w, h = width * sar, float(height)     # display size (before rotation)
    scale = short_side / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


class Scaler:
    """Decoded frames to RGB at a given size, bilinear (swscale), one thread; one per segment:
    its scaling contexts are built once, not per frame (the same pixels as new ones).

    ``via`` None: one pass from the coded format to RGB. ``via`` a YUV format (``GRID_VIA``,
    the score grid's): the bilinear pass scales into ``via`` (4:2:2: chroma at full height,
    half width) and a second pass converts that to RGB without scaling, rounding accurately
    (``RGB_PASS_FLAGS``). About half the one pass's CPU (a scaled RGB output takes swscale's
    generic per-pixel path); the pixels differ from it by about half a level on average, more
    at sharp colour edges (the chroma is rounded to 8 bits between the passes;
    tests/decoding/test_grid_convert.py declares the tolerances). Frames whose chroma is not
    subsampled across (4:4:4, RGB, grey) take the one pass."""

    def __init__(self, via: str | None = None):
        self.via = via
        self._scale, self._rgb, self._shape = VideoReformatter(), VideoReformatter(), VideoReformatter()
        self._part: av.VideoFrame | None = None

    def rgb(self, frame: av.VideoFrame, width: int, height: int,
            box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """``frame`` as uint8 RGB ``[height, width, 3]``, or only ``box`` (top, left, rows,
        columns) of it: with ``via`` only that part (and a margin) takes the RGB pass, with
        the same pixels as the whole image cropped (tested)."""
        # threads=1: decode runs one task per core; swscale's automatic slice threads (one
        # per CPU) only add CPU time on frames this small, and give the same pixels
        if self.via is None or frame.format.chroma_width(frame.width) == frame.width:
            return _cut(self._scale.reformat(frame, width=width, height=height, format="rgb24",
                                             threads=1).to_ndarray(), box)
        # the colour range, matrix and chroma siting travel on the middle frame: the second
        # pass reads them
        mid = self._scale.reformat(frame, width=width, height=height, format=self.via, threads=1)
        # a part keeps the whole frame's chroma positions only where chroma pairs are whole:
        # at an odd width the accurate pass spreads the chroma by (width / 2) / chroma width
        if box is None or self.via != "yuv422p" or width % 2:
            return _cut(self._to_rgb(mid), box)
        return self._rgb_part(mid, box)

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        return self._rgb.reformat(frame, format="rgb24", threads=1,
                                  interpolation=RGB_PASS_FLAGS).to_ndarray()

    def _rgb_part(self, mid: av.VideoFrame, box: tuple[int, int, int, int]) -> np.ndarray:
        """``box`` of a 4:2:2 ``mid`` in RGB: its rows and columns (widened to whole chroma
        pairs, plus ``CROP_MARGIN``: the accurate pass interpolates chroma across pixels) are
        copied into a frame of that size, which then takes the RGB pass (an unscaled pass
        is per pixel: the same values as the whole frame's). The copy's frame is made once by
        swscale from ``mid`` so it carries every tag ``mid`` has (chroma siting included,
        which PyAV cannot set and the accurate pass reads)."""
        top, left, rows, cols = box
        y0, y1 = max(0, top - CROP_MARGIN), min(mid.height, top + rows + CROP_MARGIN)
        x0 = max(0, left - CROP_MARGIN) // 2 * 2
        x1 = min(mid.width, left + cols + CROP_MARGIN)
        x1 += (x1 - x0) % 2 if x1 < mid.width else 0
        part = self._part
        if part is None or (part.width, part.height) != (x1 - x0, y1 - y0):
            part = self._part = self._shape.reformat(mid, width=x1 - x0, height=y1 - y0, threads=1)
        for i, (a, b) in enumerate(((x0, x1), (x0 // 2, (x1 + 1) // 2), (x0 // 2, (x1 + 1) // 2))):
            src, dst = mid.planes[i], part.planes[i]
            np.frombuffer(dst, np.uint8).reshape(-1, dst.line_size)[:y1 - y0, :b - a] = \
                np.frombuffer(src, np.uint8).reshape(-1, src.line_size)[y0:y1, a:b]
        part.color_range, part.colorspace = mid.color_range, mid.colorspace
        img = self._to_rgb(part)
        return img[top - y0:top - y0 + rows, left - x0:left - x0 + cols]


def _cut(img: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """``box`` (top, left, rows, columns) of ``img``, a view; None: all of it."""
    return img if box is None else img[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]


def _resize_crop(frame: av.VideoFrame, short_side: int, crop: int | None,
                 sar: float = 1.0, scaler: Scaler | None = None) -> np.ndarray:
    """Display-correct RGB: non-square pixels stretched to the display aspect, rotation
    applied, then short side ``short_side`` and the centre crop. ``scaler``: one reused for
    every frame of a segment; None: a one-pass ``Scaler``."""
    nw, nh = scaled_size(frame.width, frame.height, sar, short_side)
    k = _quarter_turns(frame)
    if crop is not None and not k:
        # an upright frame: only the crop is converted to RGB
        top, left = max((nh - crop) // 2, 0), max((nw - crop) // 2, 0)
        return (scaler or Scaler()).rgb(frame, nw, nh, (top, left, min(crop, nh), min(crop, nw)))
    img = (scaler or Scaler()).rgb(frame, nw, nh)
    if k:
        img = np.rot90(img, k)
        nh, nw = img.shape[:2]
    if crop is None:
        return img
    top, left = max((nh - crop) // 2, 0), max((nw - crop) // 2, 0)
    return img[top:top + crop, left:left + crop]    # a view: the callers copy it once


def _decoded(container, stream):
    """Frames of ``stream`` until the end, or until the data breaks off after at least one
    frame (a truncated file whose index survived): the caller's grid then notes how much
    was decoded instead of failing the whole file."""
    return _until_broken(container.decode(stream))


def _until_broken(frames):
    """``frames`` until they end or the data breaks off after at least one (``_decoded``)."""
    n = 0
    try:
        for frame in frames:
            n += 1
            yield frame
    except (av.error.InvalidDataError, av.error.EOFError) as e:
        if n == 0:
            raise
        logging.getLogger(__name__).info("decoding stopped after %d frames: %s", n, e)


#: packets read ahead of the one being decoded: enough to see the next frame in display order
#: past any B-frame reordering (H.264 allows 16 reordered frames)
LOOKAHEAD = 17


class _Clock:
    """A stream's ticks in seconds: ``float(ticks * stream.time_base)`` computed on ints (the
    same correctly rounded value) without building a ``Fraction`` per packet and frame."""

    def __init__(self, stream):
        tb = stream.time_base
        self.num, self.den = tb.numerator, tb.denominator

    def __call__(self, ticks: int) -> float:
        return ticks * self.num / self.den


def _taken(pts: float | None, next_pts: float | None, slots: list[float]) -> bool:
    """Whether a grid slot can take the frame shown from ``pts`` until ``next_pts``: slot k
    takes the last frame with pts <= ``slots[k]`` (slot time + PTS_SLACK). Unknown times:
    taken (it is decoded)."""
    if pts is None or next_pts is None:
        return True
    i = bisect.bisect_left(slots, pts)
    return i < len(slots) and slots[i] < next_pts


def _packets_taken(container, stream, slots: list[float]):
    """``(packet, taken)`` in decode order; ``taken`` from the packet's pts and the next pts in
    display order among the packets read so far and ``LOOKAHEAD`` ahead (the last packets of
    the file, with nothing ahead, count as taken). Ends with ``(None, True)`` once the packet
    due and every packet ahead lie past the last slot: no later frame can be taken (and none
    before the last slot can still come), so the rest of a longer file is not decoded."""
    seen: list[float] = []
    ahead: deque = deque()
    clock = _Clock(stream)
    last = slots[-1] if slots else math.inf
    early = 0       # packets in ``ahead`` at or before the last slot, or of unknown time

    def pts_of(pk) -> float | None:
        return None if pk.pts is None or pk.size == 0 else clock(pk.pts)

    def release(pk, t, end_of_file: bool):
        i = bisect.bisect_right(seen, t) if t is not None and not end_of_file else len(seen)
        return pk, pk.is_keyframe or pk.is_discard or _taken(t, seen[i] if i < len(seen) else None, slots)

    for pk in container.demux(stream):
        t = pts_of(pk)
        if t is not None:
            bisect.insort(seen, t)
        ahead.append((pk, t))
        early += t is None or t <= last
        if len(ahead) > LOOKAHEAD:
            pk, t = ahead.popleft()
            early -= t is None or t <= last
            if t is not None and t > last and not early:
                yield None, True
                return
            yield release(pk, t, False)
    while ahead:
        pk, t = ahead.popleft()
        yield release(pk, t, True)


def _decoded_for(container, stream, slots: list[float]):
    """The frames of ``stream`` a grid with slot times ``slots`` (ascending) can take, and
    more: a packet whose frame no slot can take is sent with ``skip_frame = NONREF``, so the
    decoder skips it when no other frame refers to it (a reference frame is decoded: later
    frames need it); no packet is sent once none left can be taken (the decoder is drained
    instead, as at a file's end). The frames slots take are exactly those of a full decode.
    Needs one decode thread (the setting applies to the packet being sent). Ends like
    ``_decoded``."""
    cc = stream.codec_context

    def frames():
        try:
            for pk, taken in _packets_taken(container, stream, slots):
                if pk is None:
                    yield from cc.decode(None)
                    break
                cc.skip_frame = "DEFAULT" if taken else "NONREF"
                yield from cc.decode(pk)
        finally:
            cc.skip_frame = "DEFAULT"
    return _until_broken(frames())


def _frame_end(frame: av.VideoFrame, stream, clock: _Clock | None = None) -> float:
    """Time the frame stops being shown: its pts plus its duration (else one frame period)."""
    clock = clock or _Clock(stream)
    t = clock(frame.pts)
    if frame.duration:
        return t + clock(frame.duration)
    rate = stream.average_rate or stream.guessed_rate
    return t + (1.0 / float(rate) if rate else 0.0)


def _decode_video(container, start: float, end: float, fps: float, short_side: int,
                  crop: int | None, pick_lead: float = 0.0,
                  via: str | None = None) -> tuple[np.ndarray, float]:
    """Slot k (time start + k/fps) takes the last frame shown at or before it plus ``pick_lead``;
    returns the frames and the end of the last decoded frame (before ``end`` when slots repeat
    the last frame). Only frames a slot takes are converted, once, by one ``Scaler(via)``."""
    stream = container.streams.video[0]
    sar = _sar(stream)
    # one thread: decode runs one task per core, where frame threads only add CPU time
    # (H.264 decodes to the same bits on any thread count)
    stream.thread_count = 1
    n = max(int(math.floor((end - start) * fps + 1e-6)), 0)
    # plain floats (the same values as the numpy arithmetic): compared once per frame
    times = (start + pick_lead + np.arange(n) / fps).tolist()
    eps = PTS_SLACK
    clock = _Clock(stream)
    if start > 0:
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
    last_frame = None
    scaler = Scaler(via)
    out = _Slots(n, lambda f: _resize_crop(f, short_side, crop, sar, scaler))
    latest_end = -math.inf
    for frame in _decoded_for(container, stream, [x + eps for x in times]):
        if frame.pts is None:
            continue
        t = clock(frame.pts)
        latest_end = max(latest_end, _frame_end(frame, stream, clock))
        while out.k < n and last_frame is not None and times[out.k] + eps < t:
            out.take(last_frame)
        if out.k >= n:
            break
        last_frame, out.first = frame, None
    if last_frame is None:
        raise DecodeError("no video frames decoded")
    video_end = max(latest_end, _frame_end(last_frame, stream, clock))
    while out.k < n:
        out.take(last_frame)
    if out.array is None:
        size = crop or short_side
        return np.zeros((0, size, size, 3), np.uint8), video_end
    return out.array, video_end


class _Slots:
    """A grid's ``n`` frames, written into one array as slots take them: each converted image
    is copied in at once and its buffer freed (the next conversion reuses that memory;
    holding a segment's images for one final stack touched fresh pages for every one), a
    repeated frame is copied from the slot that took it first."""

    def __init__(self, n: int, convert):
        self.n, self.k, self.convert = n, 0, convert
        self.array: np.ndarray | None = None
        #: the slot holding the current frame's image; None: the frame is not converted yet
        self.first: int | None = None

    def take(self, frame: av.VideoFrame) -> None:
        """Slot ``k`` takes ``frame`` (the current frame)."""
        if self.first is None:
            img = self.convert(frame)
            if self.array is None:
                self.array = np.empty((self.n, *img.shape), np.uint8)
            self.array[self.k] = img
            self.first = self.k
        else:
            self.array[self.k] = self.array[self.first]
        self.k += 1


#: seconds of audio decoded before the segment (the AAC decoder rebuilds its overlap from the
#: frames before; the resampler's filter reaches back) and after it (its filter reaches ahead)
AUDIO_MARGIN = 0.25


@dataclass
class SegmentAudio:
    """The audio of a segment from one decode, both zero-padded to the segment: ``grid``
    float32 ``[C', N]`` at the grid's rate (stereo or mono, clipped to [-1, 1]), ``native``
    float32 ``[C, n]`` at the stream's own rate and channels (not clipped); and where the
    decoded audio ends (on the file's clock)."""
    grid: np.ndarray
    native: np.ndarray
    native_rate: int
    end: float
    #: the mono mix of the resampled audio over the segment and ``AUDIO_MARGIN`` around it
    #: (from ``start - AUDIO_MARGIN``), and the (start, end) on the file's clock it holds
    wide: np.ndarray | None = None
    wide_extent: tuple[float, float] | None = None


def _decode_audio(container, start: float, end: float, sample_rate: int,
                  mono: bool = False) -> SegmentAudio | None:
    """[start, end) of the first audio stream: only the segment (and ``AUDIO_MARGIN`` around
    it) is decoded, once; the grid's audio is resampled from it by one resampler, from a
    native sample chosen so that its output samples fall on ``start + j / sample_rate``
    (``_aligned_skip``). ``mono``: the channels are mixed before resampling (half the
    resampling of stereo; the same values to float rounding). None without audio."""
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    t_seek = start - AUDIO_MARGIN
    if t_seek > 0:
        container.seek(int(math.floor(t_seek / stream.time_base)), stream=stream, backward=True)
    else:   # the file's start, as a fresh open reads it (a stream seek to 0 can differ)
        container.seek(0)
    native, t_first, layout = [], None, None
    clock = _Clock(stream)
    for frame in _decoded(container, stream):
        if frame.pts is not None:
            t = clock(frame.pts)
            t_first = t if t_first is None else t_first
            if t >= end + AUDIO_MARGIN:
                break
        layout = layout or frame.layout.name
        native.append(_channel_views(frame))
    if not native:
        return None
    rate = int(stream.codec_context.sample_rate or stream.rate)
    wave = _joined(native)
    t0 = t_first or 0.0
    skip = _aligned_skip(start - t0, rate, sample_rate)
    kept = wave[:, skip:]
    if mono and kept.shape[0] > 1:
        kept, layout = kept.mean(axis=0, keepdims=True, dtype=np.float32), "mono"
    audio = _resample(kept, rate, layout, sample_rate)
    t_res = t0 + skip / rate
    seg = _segment(audio, round((start - t_res) * sample_rate), round((end - start) * sample_rate))
    # the native span as the grid's: from the native sample nearest the segment's start
    nat = _segment(wave, round(start * rate) - round(t0 * rate), round((end - start) * rate))
    t_end = t_res + audio.shape[1] / sample_rate
    # the same samples with the margins (no second decode, no second resample); clipped and
    # mixed as ``Grid.audio`` mixes, so inside the segment it equals the grid's mono audio
    wide = np.clip(_segment(audio, round((start - AUDIO_MARGIN - t_res) * sample_rate),
                            round((end - start + 2 * AUDIO_MARGIN) * sample_rate)), -1.0, 1.0)
    wide = wide[0] if wide.shape[0] == 1 else wide.mean(axis=0).astype(np.float32)
    return SegmentAudio(grid=np.clip(seg, -1.0, 1.0), native=nat, native_rate=rate, end=t_end,
                        wide=wide, wide_extent=(max(t0, t_res), t_end))


def _aligned_skip(lead: float, rate: int, out_rate: int) -> int:
    """How many native samples to drop so that the resampler's first output sample (at the
    first native sample kept) lies a whole number of output periods before the segment start
    ``lead`` s after the first native sample: the grid's samples then sit on their own
    times (to 1/``rate``/``out_rate`` s, not to half an output sample)."""
    period = rate // math.gcd(rate, out_rate)       # the phase pattern repeats every period
    m = np.arange(min(period, max(int(lead * rate), 0) + 1))
    frac = ((lead - m / rate) * out_rate) % 1.0
    return int(m[np.argmin(np.minimum(frac, 1.0 - frac))])


def _resample(wave: np.ndarray, rate: int, layout: str, out_rate: int) -> np.ndarray:
    """``[C, n]`` float32 at ``rate`` -> ``[C', N]`` at ``out_rate`` by libswresample (mono
    stays mono, more channels are mixed to stereo), in one call and its flush."""
    out_layout = "mono" if wave.shape[0] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave), format="fltp", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=out_layout, rate=out_rate)
    chunks = [f.to_ndarray() for f in (*resampler.resample(frame), *resampler.resample(None))]
    if not chunks:
        return np.zeros((1 if out_layout == "mono" else 2, 0), np.float32)
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False)


def _segment(audio: np.ndarray, i0: int, n: int) -> np.ndarray:
    """``audio[:, i0:i0 + n]``, zero-padded where it reaches outside the decoded samples."""
    if i0 < 0:
        audio = np.pad(audio, ((0, 0), (-i0, 0)))
        i0 = 0
    seg = audio[:, i0:i0 + n]
    if seg.shape[1] < n:
        seg = np.pad(seg, ((0, 0), (0, n - seg.shape[1])))
    return seg


def planar_float(frame: av.AudioFrame) -> np.ndarray:
    """A decoded audio frame as planar float32 ``[C, n]`` (packed layouts split, integer PCM
    scaled to [-1, 1])."""
    x = frame.to_ndarray()
    if not frame.format.is_planar:             # packed [1, n * C] -> [C, n]
        x = x.reshape(-1, len(frame.layout.channels)).T
    if x.dtype.kind in "iu":                   # integer PCM -> [-1, 1]
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def _channel_views(frame: av.AudioFrame) -> list[np.ndarray]:
    """A decoded audio frame's channels as float32 rows, the values of ``planar_float``: views
    on the frame's planes for planar float (what AAC and most decoders give: no copy, no
    per-frame array assembly; the frame lives as long as its views), else its rows."""
    if frame.format.name == "fltp":
        n = frame.samples
        return [np.frombuffer(p, np.float32, n) for p in frame.planes]
    return list(planar_float(frame))


def _joined(frames: list[list[np.ndarray]]) -> np.ndarray:
    """Per-frame channel rows (``_channel_views``) joined into one float32 ``[C, n]``."""
    channels = len(frames[0])
    out = np.empty((channels, sum(len(f[0]) for f in frames)), np.float32)
    for c in range(channels):
        np.concatenate([f[c] for f in frames], out=out[c])
    return out


def _display_facts(c, v) -> dict:
    """Rotation (degrees, counter-clockwise), sample aspect ratio and the upright display
    size (what a player shows; cut and decode produce frames of this shape)."""
    rotation = 0
    try:
        for frame in c.decode(v):
            rotation = (_quarter_turns(frame) * 90)
            break
    except av.error.FFmpegError:
        pass            # an undecodable first frame: the decode itself will say so
    sar = _sar(v)
    w, h = v.codec_context.width or 0, v.codec_context.height or 0
    dw, dh = (int(round(w * sar)), h) if sar >= 1 else (w, int(round(h / sar)))
    if rotation in (90, 270):
        dw, dh = dh, dw
    return {"rotation": rotation, "sar": sar, "display_width": dw, "display_height": dh}


def probe(path: str | Path) -> dict:
    """Duration, size, fps and audio facts of a media file. Raises DecodeError (NoVideoError
    for an audio-only file).

    ``width``/``height`` are the coded size; ``display_width``/``display_height`` apply the
    sample aspect ratio and the rotation (``rotation``: degrees counter-clockwise)."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                kind = "audio-only file" if c.streams.audio else "no streams"
                raise NoVideoError(f"no video stream ({kind})")
            v = c.streams.video[0]
            a = c.streams.audio[0] if c.streams.audio else None
            dur = float(c.duration / av.time_base) if c.duration else None
            if dur is None and v.duration:
                dur = float(v.duration * v.time_base)
            rate = v.average_rate or v.guessed_rate or Fraction(0)
            start = float(c.start_time / av.time_base) if c.start_time is not None else 0.0
            return {
                "start_time": start,
                "duration": dur, "width": v.codec_context.width, "height": v.codec_context.height,
                "fps": float(rate), "has_audio": a is not None,
                "sample_rate": a.codec_context.sample_rate if a is not None else None,
                "audio_channels": a.codec_context.channels if a is not None else None,
                **_display_facts(c, v),
            }
    except av.error.FFmpegError as e:
        raise DecodeError(f"cannot open {Path(path).name}: {e}") from e


def _open(src: str | Path | bytes):
    """A container on a path, or on an in-memory file (a shard member) without temp files."""
    return av.open(io.BytesIO(src)) if isinstance(src, (bytes, bytearray)) else av.open(str(src))


def decode_clip(src: str | Path | bytes, start: float, end: float | None, fps: float = GRID_FPS,
                short_side: int = GRID_SIZE, crop: int | None = GRID_SIZE,
                sample_rate: int = SAMPLE_RATE, offset: float = 0.0, native: bool = False,
                pick_lead: float = 0.0, via: str | None = None) -> Grid:
    """Decode [start, end) of ``src`` (a path, or the bytes of a media file) onto a grid of
    ``fps`` frames and ``sample_rate`` audio; ``end`` None: the file's end. ``pick_lead``:
    each slot takes the frame shown that much after its instant (``ffmpeg_fps_lead(fps)``
    picks as ffmpeg's ``fps`` filter). ``via``: the frames' conversion (``Scaler``).

    ``offset``: where time 0 of ``start``/``end`` lies on the file's own clock (a stream-copied
    download keeps its source's timestamps: its segment starts ``seg_start`` s into that
    clock). The grid's times stay relative (``Grid.start == start``). ``native``: keep the
    audio on the source's rate and channels too (``Grid.native_audio``), from the same decode."""
    name = "<bytes>" if isinstance(src, (bytes, bytearray)) else Path(src).name
    try:
        with _open(src) as c:
            return decode_open(c, start, end, fps, short_side, crop, sample_rate, offset,
                               native, pick_lead, via=via)
    except av.error.FFmpegError as e:
        raise DecodeError(f"cannot decode {name}: {e}") from e


def container_end(c) -> float:
    """Where an open file ends on its own clock (start time + duration, the container's else
    the video stream's, as ``probe``); DecodeError when unknown."""
    start = float(c.start_time / av.time_base) if c.start_time is not None else 0.0
    if c.duration:
        return float(c.duration / av.time_base) + start
    v = c.streams.video[0] if c.streams.video else None
    if v is not None and v.duration:
        return float(v.duration * v.time_base) + start
    raise DecodeError("unknown duration")


def decode_open(c, start: float, end: float | None, fps: float = GRID_FPS,
                short_side: int = GRID_SIZE, crop: int | None = GRID_SIZE,
                sample_rate: int = SAMPLE_RATE, offset: float = 0.0, native: bool = False,
                pick_lead: float = 0.0, mono: bool = False, via: str | None = None) -> Grid:
    """``decode_clip`` on an open container (one open per file: the video, then the same
    container seeks to the segment's audio). ``mono``: only the mono mix is resampled
    (``Grid.audio_channels`` ``[1, N]``: what a reader of ``Grid.audio`` alone needs). FFmpeg
    errors propagate."""
    if not c.streams.video:
        raise NoVideoError("no video stream (audio-only file)" if c.streams.audio
                           else "no video stream")
    if end is None:
        end = container_end(c) - offset
    a, b = start + offset, end + offset
    frames, video_end = _decode_video(c, a, b, fps, short_side, crop, pick_lead, via)
    decoded = _decode_audio(c, a, b, sample_rate, mono)
    video_end -= offset
    kept = {}
    if decoded is None:
        audio, audio_end = np.zeros((1, int(round((end - start) * sample_rate))), np.float32), None
    else:
        audio, audio_end = decoded.grid, decoded.end - offset
        if native:
            kept = {"native_audio": decoded.native, "native_rate": decoded.native_rate,
                    "wide_audio": decoded.wide, "wide_start": start - AUDIO_MARGIN,
                    "wide_extent": (decoded.wide_extent[0] - offset, decoded.wide_extent[1] - offset)}
    return Grid(frames=frames, audio_channels=audio, start=start, fps=fps,
                sample_rate=sample_rate, has_audio=decoded is not None,
                notes=_short_notes(start, end, video_end, audio_end),
                video_end=video_end if video_end < end - SHORT_TOLERANCE else None, **kept)


def _short_notes(start: float, end: float, video_end: float, audio_end: float | None) -> list[str]:
    """A video that stops before ``end``: its last frame filled the rest of the grid, so say
    so: ``video_short`` when the audio goes on, else ``decoded X of Y s``."""
    if video_end >= end - SHORT_TOLERANCE:
        return []
    v = max(video_end - start, 0.0)
    if audio_end is not None and audio_end > video_end + SHORT_TOLERANCE:
        a = min(audio_end, end) - start
        return [f"video_short: video {v:.1f} s, audio {a:.1f} s"]
    return [f"decoded {v:.2f} of {end - start:.2f} s"]


def decode_grid(path: str | Path, start: float = 0.0, end: float | None = None,
                offset: float = 0.0) -> Grid:
    """The analysis grid of DESIGN section 3: 12 fps, 224 crop, 16 kHz, plus the native audio
    (``Grid.native_audio``) from the same decode; frames converted through ``GRID_VIA``.
    ``offset``: the segment's start on the file's clock (``decode_clip``); ``end`` defaults
    to the file's end."""
    # every channel is resampled (not the mono mix alone): amplitude reads each channel's peak
    # (a mix can cancel out-of-phase channels); the loader, which needs the mix, passes mono
    return decode_clip(path, start, end, offset=offset, native=True, via=GRID_VIA)


# ----------------------------------------------------------------------------- frame instants

#: a requested time this close before a frame's instant counts as that instant (decimal
#: times like 15.5155 s meet frames stored in 1/30000 s units)
INSTANT_SLACK = 1e-6


def frame_instants(path: str | Path, start: float, end: float) -> tuple[float, float]:
    """(t0, t1) on the file's clock: t0 = the first video frame at or after ``start``, t1 =
    the first frame at or after ``end`` (exclusive), else where the last frame stops.

    Read from the packets (no decoding), presentation times after edit lists; packets an
    edit list discards are not frames of the file."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise NoVideoError("no video stream")
            v = c.streams.video[0]
            c.seek(max(int((start - 2.0) / v.time_base), 0), stream=v, backward=True, any_frame=False)
            pts, last_end = [], None
            for pk in c.demux(v):
                if pk.pts is None or pk.is_discard or pk.size == 0:
                    continue
                t = float(pk.pts * v.time_base)
                pts.append(t)
                if pk.duration:
                    last_end = max(last_end or t, t + float(pk.duration * v.time_base))
                if t > end + 5.0:    # past any B-frame reordering
                    break
    except av.error.FFmpegError as e:
        raise DecodeError(f"cannot read frames of {Path(path).name}: {e}") from e
    pts.sort()
    t0 = next((t for t in pts if t >= start - INSTANT_SLACK), None)
    if t0 is None:
        raise DecodeError(f"{Path(path).name}: no video frame at or after {start:.6f} s")
    t1 = next((t for t in pts if t >= end - INSTANT_SLACK), None)
    if t1 is None:
        t1 = max(last_end or pts[-1], pts[-1])
    return t0, t1


def stream_starts(src: str | Path | bytes) -> tuple[float | None, float | None]:
    """(first video frame time, first audio sample time) in seconds, as a player shows them:
    the first *decoded* frame of each stream, so edit lists and the encoder delay (AAC
    priming, dropped by the decoder) are applied. None for a missing stream."""
    out: list[float | None] = []
    try:
        for kind in ("video", "audio"):
            with _open(src) as c:
                streams = getattr(c.streams, kind)
                t = None
                if streams:
                    s = streams[0]
                    for fr in c.decode(s):
                        if fr.pts is not None:
                            t = float(fr.pts * s.time_base)
                            break
                out.append(t)
    except av.error.FFmpegError as e:
        raise DecodeError(f"cannot read stream starts: {e}") from e
    return out[0], out[1]


def av_offset_ms(src: str | Path | bytes) -> float | None:
    """First audio sample time minus first video frame time, in ms (``stream_starts``); a
    positive offset means the sound comes late. None without both streams."""
    v, a = stream_starts(src)
    if v is None or a is None:
        return None
    return (a - v) * 1000.0


# ----------------------------------------------------------------------------- stills

def stills(src: str | Path, times, height: int, max_aspect: float = 16 / 9,
           offset: float = 0.0) -> list[np.ndarray]:
    """The frames shown at ``times`` (seconds, ``offset`` added as in ``decode_clip``), one
    pass over the file: a seek before the first time, then decoding forward; each time takes
    the last frame shown at or before it (the first frame when it comes before every frame).

    Each still is display-correct RGB (pixel aspect, rotation) with its short side ``height``,
    centre-cropped to at most ``height`` tall and ``max_aspect * height`` wide; only the
    picked frames are converted."""
    want = sorted((float(t) + offset, i) for i, t in enumerate(times))
    out: list[np.ndarray | None] = [None] * len(want)
    try:
        with _open(src) as c:
            if not c.streams.video:
                raise NoVideoError("no video stream")
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            sar, k, last = _sar(stream), 0, None
            if want and want[0][0] > 0:
                c.seek(int(want[0][0] / stream.time_base), stream=stream, backward=True)
            for frame in _decoded(c, stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                while k < len(want) and want[k][0] + PTS_SLACK < t:
                    out[want[k][1]] = _still(frame if last is None else last, height, max_aspect, sar)
                    k += 1
                if k == len(want):
                    break
                last = frame
            if last is None:
                raise DecodeError("no video frames decoded")
            for _, i in want[k:]:          # times past the last frame show the last frame
                out[i] = _still(last, height, max_aspect, sar)
    except av.error.FFmpegError as e:
        raise DecodeError(f"cannot decode {Path(src).name}: {e}") from e
    return out  # type: ignore[return-value]


def _still(frame: av.VideoFrame, height: int, max_aspect: float, sar: float) -> np.ndarray:
    img = _resize_crop(frame, height, None, sar)
    h, w = img.shape[:2]
    top, width = max((h - height) // 2, 0), min(w, int(round(max_aspect * height)))
    left = (w - width) // 2
    return np.ascontiguousarray(img[top:top + height, left:left + width])
