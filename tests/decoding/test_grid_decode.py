"""The score stage's decode (``decoding.media.decode_grid``): one open, the segment's audio
only, frames converted once, non-reference frames no slot takes skipped; against plain
decodes written here (every frame decoded, the whole file's audio), and the values of each
``GRID_DECODE`` version pinned."""
from __future__ import annotations

import hashlib
import subprocess
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import Interpolation

from decoding import media
from decoding.media import GRID_DECODE, GRID_FPS, GRID_SIZE, PTS_SLACK, SAMPLE_RATE, decode_grid
from tests.avmedia import make_clip

#: a stream copy of 176x144 H.264 at 30000/1001 fps with B-frames and 44.1-kHz stereo AAC,
#: cut as downloads are (from a keyframe, the source's clock kept): video from 1.001 s, audio
#: from 0.928 s (``ffmpeg -ss 1.7 -i src -t 3.5 -c copy -copyts``)
SEGMENT_COPY = Path(__file__).parent / "data" / "segment_copy.mp4"

#: sha256 of the decoded values (frames, grid audio, native audio) of SEGMENT_COPY per version:
#: a change of any decoded value must come with a new GRID_DECODE (it is in the score fingerprint)
PINNED = {"grid-2": "c1c7112ad613d519aa9ae631357d8da29fc36e8bf58b432d083e11a49b1a6239",
          "grid-3": "03d0f6b56ae8b6a0787014474edbcbcb87ce1d32de8072657951813dbf1655f7",
          "grid-4": "8a75faf608180d2433952f933eeffc14cb7d9ca7df84309819dc9a042e2ee65f"}


#: the flags of grid-4's RGB pass, written out here
ACCURATE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND


def _digest(grids) -> str:
    h = hashlib.sha256()
    for g in grids:
        for a in (g.frames, g.audio_channels, g.native_audio):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_decoded_values_are_pinned_for_the_version():
    grids = [decode_grid(SEGMENT_COPY, 0.0, 2.0, offset=1.2), decode_grid(SEGMENT_COPY, 0.0, 1.0, offset=2.5)]
    assert _digest(grids) == PINNED[GRID_DECODE], (
        "the grid decode's values changed: bump decoding.media.GRID_DECODE (scores are rescored "
        "once) and pin the new digest")


@pytest.mark.parametrize("version,patch", [("grid-2", {"GRID_VIA": None}),
                                           ("grid-3", {"RGB_PASS_FLAGS": Interpolation.BILINEAR})])
def test_earlier_versions_are_reproduced_bit_for_bit(monkeypatch, version, patch):
    """The fallbacks: one pass gives grid-2's values, the fast RGB pass grid-3's (converted as
    a part of each frame: the crop of the whole image, to the bit)."""
    for name, value in patch.items():
        monkeypatch.setattr(media, name, value)
    grids = [decode_grid(SEGMENT_COPY, 0.0, 2.0, offset=1.2), decode_grid(SEGMENT_COPY, 0.0, 1.0, offset=2.5)]
    assert _digest(grids) == PINNED[version]


@pytest.fixture(scope="module")
def sized_frames(tmp_path_factory) -> dict[str, list]:
    """Three decoded frames per coded size: even and odd scaled widths, a crop starting on an
    odd and on an even column (398 and 448 wide), portrait (the crop takes rows), a 4:2:2
    source."""
    out = {}
    for size, pix in [("426x240", "yuv420p"), ("454x256", "yuv420p"), ("352x288", "yuv420p"),
                      ("240x426", "yuv420p"), ("227x131", "yuv422p"), ("300x226", "yuv420p"),
                      ("600x300", "yuv420p")]:
        path = tmp_path_factory.mktemp("sized") / f"{size}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d=0.2",
                        "-vf", "noise=alls=30:allf=t", "-pix_fmt", pix, "-c:v", "libx264", str(path)], check=True)
        with av.open(str(path)) as c:
            out[size] = list(c.decode(video=0))[:3]
    return out


@pytest.mark.parametrize("size", ["426x240", "454x256", "352x288", "240x426", "227x131", "300x226",
                                  "600x300"])
def test_a_converted_part_equals_the_whole_image_cropped(sized_frames, size):
    """Only the centre crop (and a margin) takes the RGB pass: its pixels are those of the
    whole scaled image converted and then cropped."""
    scaler = media.Scaler(media.GRID_VIA)
    for f in sized_frames[size]:
        nw, nh = media.scaled_size(f.width, f.height, 1.0, GRID_SIZE)
        whole = f.reformat(width=nw, height=nh, format="yuv422p").reformat(
            format="rgb24", interpolation=ACCURATE).to_ndarray()
        top, left = (nh - GRID_SIZE) // 2, (nw - GRID_SIZE) // 2
        got = media._resize_crop(f, GRID_SIZE, GRID_SIZE, 1.0, scaler)
        assert np.array_equal(got, whole[top:top + GRID_SIZE, left:left + GRID_SIZE]), (nw, nh)


def _plain_frames(path, a: float, n: int, two_pass: bool = True) -> np.ndarray:
    """Every frame decoded (default threads); slot k shows the last frame with pts <= t + 1 ms,
    converted by new scalers at the grid's size, then centre-cropped. ``two_pass``: as grid-4
    converts (bilinear into 4:2:2 YUV, then the whole image to RGB unscaled, rounding
    accurately), else in one bilinear pass to RGB (grid-2)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(float(f.pts * v.time_base), f) for f in c.decode(v)]
    out = []
    for k in range(n):
        t = a + k / GRID_FPS + PTS_SLACK
        f = [fr for p, fr in frames if p <= t][-1]
        s = GRID_SIZE / min(f.width, f.height)
        size = {"width": round(f.width * s), "height": round(f.height * s)}
        if two_pass:
            img = f.reformat(**size, format="yuv422p").reformat(format="rgb24", interpolation=ACCURATE).to_ndarray()
        else:
            img = f.reformat(**size, format="rgb24").to_ndarray()
        top, left = (img.shape[0] - GRID_SIZE) // 2, (img.shape[1] - GRID_SIZE) // 2
        out.append(img[top:top + GRID_SIZE, left:left + GRID_SIZE])
    return np.stack(out)


@pytest.mark.parametrize("offset", [1.2, 1.75, 2.5])
def test_frames_equal_a_decode_of_every_frame(offset):
    g = decode_grid(SEGMENT_COPY, 0.0, 1.0, offset=offset)
    assert np.array_equal(g.frames, _plain_frames(SEGMENT_COPY, offset, 12))


def test_unused_non_reference_frames_are_not_decoded(monkeypatch):
    """The file has B-frames no reference points to: those no 12-fps slot takes are skipped."""
    sent = []
    real = media._packets_taken

    def spy(*a):
        for pk, taken in real(*a):
            sent.append(taken)
            yield pk, taken
    monkeypatch.setattr(media, "_packets_taken", spy)
    decode_grid(SEGMENT_COPY, 0.0, 2.0, offset=1.2)
    assert 0 < sent.count(False) < len(sent)


@pytest.mark.parametrize("offset", [1.75, 2.0])
def test_no_frame_past_the_segment_is_decoded(monkeypatch, offset):
    """A segment of a longer file stops where a whole file of the segment would end: once no
    packet left can be taken, none is sent and the decoder is drained, so no frame past the
    last slot is decoded here (nothing refers to one; the old loop decoded the next frame
    to see that the last slot's frame was final), and the frames are those of a full decode."""
    times, real = [], media._decoded_for

    def spy(container, stream, slots):
        for f in real(container, stream, slots):
            times.append((float(f.pts * stream.time_base), slots[-1]))
            yield f
    monkeypatch.setattr(media, "_decoded_for", spy)
    g = decode_grid(SEGMENT_COPY, 0.0, 1.0, offset=offset)
    assert len(times) > 12 and not [t for t, last in times if t > last]
    assert np.array_equal(g.frames, _plain_frames(SEGMENT_COPY, offset, 12))


def test_one_open_per_decode(monkeypatch):
    opened = []
    real = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a) or real(*a, **k))
    g = decode_grid(SEGMENT_COPY, 0.0, 1.0, offset=1.2)
    assert len(opened) == 1 and g.has_audio


def test_converted_images_are_let_go_at_once(monkeypatch):
    """Each converted image is copied into the grid as its slot takes it and then let go: a
    decode never holds more than the one being copied (holding a segment's images for one
    final stack touched fresh memory for every one of them)."""
    refs, held = [], []
    real = media._resize_crop

    def spy(*a, **k):
        img = real(*a, **k)
        refs.append(weakref.ref(img))
        held.append(sum(r() is not None for r in refs))
        return img
    monkeypatch.setattr(media, "_resize_crop", spy)
    g = decode_grid(SEGMENT_COPY, 0.0, 2.0, offset=1.2)
    assert len(refs) > 12 and max(held) == 1
    assert np.array_equal(g.frames, _plain_frames(SEGMENT_COPY, 1.2, 24))


@pytest.mark.parametrize("codec", ["aac", "pcm_s16le"])
def test_audio_frames_read_as_planar_float(tmp_path, codec):
    """The segment's audio is read from each frame's planes (planar float, AAC's) or its rows
    (other sample formats): the values of ``planar_float``, frame by frame and joined."""
    path = tmp_path / f"a_{codec}.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SEGMENT_COPY), "-c:v", "copy",
                    "-c:a", codec, str(path)], check=True)
    with av.open(str(path)) as c:
        frames = [f for _, f in zip(range(20), c.decode(c.streams.audio[0]))]
    views = [media._channel_views(f) for f in frames]
    for f, v in zip(frames, views):
        assert np.array_equal(np.stack(v), media.planar_float(f))
    assert np.array_equal(media._joined(views),
                          np.concatenate([media.planar_float(f) for f in frames], axis=1))


def _whole_file_audio(path) -> tuple[np.ndarray, float, np.ndarray, int]:
    """(16-kHz audio resampled from the file's first sample, its first time, the native
    samples, the native rate): the whole stream decoded from a fresh open."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        r = av.AudioResampler(format="fltp", layout="stereo" if s.channels > 1 else "mono", rate=SAMPLE_RATE)
        frames = list(c.decode(s))
        t0 = float(frames[0].pts * s.time_base)
        native = np.concatenate([f.to_ndarray() for f in frames], axis=1)
        out = [x.to_ndarray() for f in [*frames, None] for x in r.resample(f)]
        return np.concatenate(out, axis=1), t0, native, s.rate


@pytest.fixture(scope="module")
def tone_clips(tmp_path_factory):
    """Stereo 44.1-kHz AAC from time 0 (tones and clicks), 30 fps, 12 s: with the encoder's
    perceptual noise substitution off and on (``make_clip``'s default: on)."""
    d = tmp_path_factory.mktemp("grid")
    return {pns: make_clip(d / f"clip_{pns}.mp4", 12.0, "30", sr=44100, channels=2, pns=pns)
            for pns in (False, True)}


@pytest.mark.parametrize("offset", [0.0, 1.5, 7.25])
def test_audio_equals_the_whole_files_resampled_audio(tone_clips, offset):
    """Where the old decode's samples sat on their times (audio from 0, whole-sample offsets)
    the segment's own decode gives the same bits: AAC decoded from a seek (one frame of
    pre-roll) and one resampler started on the grid's clock reproduce the continuous decode."""
    g = decode_grid(tone_clips[False], 0.0, 3.0, offset=offset)
    whole, t0, native, rate = _whole_file_audio(tone_clips[False])
    assert t0 == 0.0
    i0 = round(offset * SAMPLE_RATE)
    assert np.array_equal(g.audio_channels, np.clip(whole[:, i0:i0 + 3 * SAMPLE_RATE], -1, 1))
    # the native audio (Grid.native_audio) is the same decode's span at the stream's rate
    j0, n = round(offset * rate), 3 * rate
    assert g.native_rate == rate and g.native_audio.shape == (2, n)
    assert np.array_equal(g.native_audio, native[:, j0:j0 + n])


#: declared tolerances of the segment's audio against the whole file's decode where the AAC
#: encoder substituted noise for some bands (PNS): the decoder draws that noise from a
#: generator whose state depends on where decoding started, so those bands are other noise of
#: the same energy. ImageBind mel (normalised units): mean |difference| and the largest;
#: amplitude (max |sample|): relative.
MEL_MEAN_TOL, MEL_MAX_TOL, AMPLITUDE_REL_TOL = 0.02, 1.0, 0.03


@pytest.mark.parametrize("offset", [1.5, 7.25])
def test_noise_substituted_audio_within_declared_tolerances(tone_clips, offset):
    from decoding.mel import imagebind_mel
    from filters import amplitude

    g = decode_grid(tone_clips[True], 0.0, 3.0, offset=offset)
    whole, _, _, _ = _whole_file_audio(tone_clips[True])
    i0 = round(offset * SAMPLE_RATE)
    ref = np.clip(whole[:, i0:i0 + 3 * SAMPLE_RATE], -1, 1)
    assert not np.array_equal(g.audio_channels, ref)        # the substituted noise differs
    for t in (0, SAMPLE_RATE):                              # two 2-s ImageBind inputs
        d = (imagebind_mel(g.audio[t:t + 2 * SAMPLE_RATE])
             - imagebind_mel(ref.mean(axis=0)[t:t + 2 * SAMPLE_RATE].astype(np.float32))).abs()
        assert float(d.mean()) < MEL_MEAN_TOL and float(d.max()) < MEL_MAX_TOL
    a, b = amplitude.score(g.audio_channels), amplitude.score(ref)
    assert abs(a - b) <= AMPLITUDE_REL_TOL * b


def _phase_delay(x: np.ndarray, freq: float, times: np.ndarray) -> float:
    """Seconds by which ``x`` lags a sine of ``freq`` at ``times`` (least-squares phase)."""
    w = 2 * np.pi * freq * times
    a, b = np.linalg.lstsq(np.stack([np.sin(w), np.cos(w)], 1), x, rcond=None)[0]
    return -np.arctan2(b, a) / (2 * np.pi * freq)


def test_audio_of_a_stream_copy_sits_on_the_grid_clock():
    """A stream copy's audio starts between grid samples (0.928 s on the source's clock):
    grid sample j is the sound the decoder times at start + j / 16 kHz, to a microsecond. The
    right channel is a 1320-Hz tone: its phase in the grid equals its phase in the native
    samples at their own times (first pts + n / 44.1 kHz); rounding the start to a whole
    sample (the old decode) put it 25 us off here."""
    offset = 1.20003                      # (offset - 0.928) s = 4352.41 samples at 16 kHz
    g = decode_grid(SEGMENT_COPY, 0.0, 2.0, offset=offset)
    whole, t0, native, rate = _whole_file_audio(SEGMENT_COPY)
    assert Fraction(t0).limit_denominator(44100) == Fraction(1637, 1764)
    n0 = round((offset - t0) * rate)
    native_delay = _phase_delay(native[1, n0:n0 + 2 * rate], 1320.0, t0 + (n0 + np.arange(2 * rate)) / rate)
    times = offset + np.arange(g.audio_channels.shape[1]) / SAMPLE_RATE
    assert abs(_phase_delay(g.audio_channels[1], 1320.0, times) - native_delay) < 1.5e-6
    i0 = round((offset - t0) * SAMPLE_RATE)
    rounded = whole[1, i0:i0 + len(times)]
    assert abs(_phase_delay(rounded, 1320.0, times) - native_delay) > 20e-6
