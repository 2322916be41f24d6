"""shards.loader convention="released": the paper's generation dataset's tensors.

The reference here is a transcription of the released code path (lzhangbj/ASVA
``avgen/data/base.py`` ``BaseAudioVideoDataset.__getitem__`` with ``example_list_type="video"``,
``avgen/data/utils.py`` ``load_video_clip_from_videoreader``,
``load_and_transform_images_stable_diffusion``, ``load_audio_clip_from_videoreader``), run on a
stand-in for torchvision's ``VideoReader`` with its ``video_reader`` semantics (read in
pytorch/vision ``torchvision/csrc/io/decoder``: pts and stream durations rescaled to whole
microseconds with ``av_rescale_q`` and reported as ``us * 1e-6``; an accurate seek to ``t``
yields the frames with ``pts_us >= int64(t * 1e6)``; audio frames come as the codec's planar
float bytes in a ``[samples, channels]`` tensor, which the released ``.view(c, t)`` turns back
into ``[channels, samples]``). Pixels go through torchvision's own ``Resize``/``CenterCrop``.
torchaudio's resampler and ImageBind's fbank are the independent numpy references of
``tests/kaldi_reference.py`` (checked against the real torchaudio in tests/decoding/test_mel.py),
not our ``sinc_resample`` / ``released_mel``.
"""
from __future__ import annotations

import itertools
import random
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from filters.torch_compat import import_torchvision
from shards.loader import (ClipDecoder, decode_released, make_dataset, released_frame_picks,
                           released_start)
from shards.writer import Sample, shard_urls, write_shards

from tests import kaldi_reference as kref
from testkit.avmedia import index_of, make_clip

# ---------------------------------------------------------------- generated clips


CLIPS = {  # name: (duration, fps, sample rate, channels[, (width, height)])
    "30fps_mono16k": (3.0, "30", 16000, 1),
    "2997fps_stereo48k": (4.1, "30000/1001", 48000, 2),
    "25fps_stereo44k": (3.3, "25", 44100, 2),
    "24fps_mono16k": (2.7, "24", 16000, 1),
    "12fps_mono16k": (2.5, "12", 16000, 1),
    "short_30fps": (1.5, "30", 16000, 1),
    "portrait_25fps": (2.6, "25", 16000, 1, (128, 200)),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("released_clips")
    return {k: make_clip(d / f"{k}.mp4", *v) for k, v in CLIPS.items()}


# ---------------------------------------------------------------- torchvision video_reader stand-in

def _us(n: int, tb: Fraction) -> int:
    """av_rescale_q(n, tb, 1/1e6): nearest integer, halves away from zero."""
    x = Fraction(n) * tb * 1_000_000
    return int(x + Fraction(1, 2)) if x >= 0 else -int(-x + Fraction(1, 2))


class FakeVideoReader:
    """What ``torchvision.io.VideoReader(path, "video")`` hands the released code."""

    def __init__(self, path: Path, stream: str = "video") -> None:
        self.path, self.stream = path, stream
        with av.open(str(path)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            self.meta = {
                "video": {"duration": [_us(v.duration, v.time_base) * 1e-6],
                          "fps": [float(v.guessed_rate)]},
                "audio": {"duration": [_us(a.duration, a.time_base) * 1e-6],
                          "framerate": [float(a.rate)]},
            }

    def get_metadata(self) -> dict:
        return self.meta

    def set_current_stream(self, stream: str) -> None:
        self.stream = stream

    def seek(self, t: float):
        start_us = int(t * 1e6)  # int64(videoStartS * 1e6): truncation
        with av.open(str(self.path)) as c:
            s = c.streams.video[0] if self.stream == "video" else c.streams.audio[0]
            for i, f in enumerate(c.decode(s)):
                pts_us = _us(f.pts, s.time_base)
                if pts_us < start_us:  # accurate seek: decoder drops earlier frames
                    continue
                if self.stream == "video":
                    data = torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)
                else:  # planar float bytes copied into a [samples, channels] tensor
                    planar = np.ascontiguousarray(f.to_ndarray(), np.float32)
                    data = torch.from_numpy(planar.reshape(-1).copy()).view(planar.shape[1],
                                                                             planar.shape[0])
                yield {"pts": pts_us * 1e-6, "data": data, "index": i}


# ---------------------------------------------------------------- the released code, transcribed

def released_getitem(path: Path, mode: str, start: float | None = None, size=(256, 256)):
    """BaseAudioVideoDataset.__getitem__ (example_list_type "video", video_fps 6,
    video_num_frame 12, normalize=False, no flip): (video (c f h w), mel, start, frame
    indices, audio frame indices). ``start`` replaces random.uniform in train mode."""
    video_fps, video_num_frame = 6, 12
    clip_duration = video_num_frame / video_fps
    av_reader = FakeVideoReader(path, stream="video")
    meta_data = av_reader.get_metadata()
    video_duration = float(meta_data["video"]["duration"][0])
    audio_duration, audio_sr = float(meta_data["audio"]["duration"][0]), int(meta_data["audio"]["framerate"][0])
    av_duration = min(video_duration, audio_duration)
    if mode == "train":
        clip_start_timestamp = max(0., start)
    else:
        clip_start_timestamp = max(0., (av_duration - clip_duration) / 2.)
    images, indices = load_video_clip(av_reader, clip_start_timestamp, video_fps, video_num_frame)
    video = transform_images(images, size).permute(1, 0, 2, 3)  # rearrange "f c h w -> c f h w"
    mel, audio_indices = load_audio_clip(av_reader, clip_start_timestamp, clip_duration, audio_sr)
    return video, mel, clip_start_timestamp, indices, audio_indices


def load_video_clip(av_reader, clip_start_timestamp: float, video_fps: int, video_num_frame: int):
    """load_video_clip_from_videoreader: (frames f c h w in [0, 1], their indices)."""
    av_reader.set_current_stream("video")
    clip_duration = video_num_frame / video_fps
    keyframe_coverage = 1. / video_fps
    video_frames, indices = [], []
    frame_timestamp = clip_start_timestamp
    for i, frame in enumerate(itertools.takewhile(
            lambda x: x['pts'] <= clip_start_timestamp + clip_duration + keyframe_coverage / 2.,
            av_reader.seek(max(clip_start_timestamp, 0.)))):
        if frame["pts"] >= frame_timestamp:
            video_frames.append(frame["data"])
            indices.append(frame["index"])
            frame_timestamp += keyframe_coverage
        if len(video_frames) == video_num_frame:
            break
    if len(video_frames) < video_num_frame:
        res_length = video_num_frame - len(video_frames)
        for _ in range(res_length):
            video_frames.append(video_frames[-1])
            indices.append(indices[-1])
    return torch.stack(video_frames, dim=0).float() / 255., indices


def transform_images(images: torch.Tensor, size=(256, 256)) -> torch.Tensor:
    """load_and_transform_images_stable_diffusion(size=[256, 256], flip=False, randcrop=False)."""
    transforms = import_torchvision().transforms
    h, w = images.shape[-2:]
    target_h, target_w = size
    target_aspect_ratio = float(target_h) / target_w
    curr_aspect_ratio = float(h) / w
    if target_aspect_ratio >= curr_aspect_ratio:
        trimmed_w = int(h / target_aspect_ratio)
        images = images[:, :, :, (w - trimmed_w) // 2: (w - trimmed_w) // 2 + trimmed_w]
    else:
        trimmed_h = int(w * target_aspect_ratio)
        images = images[:, :, (h - trimmed_h) // 2: (h - trimmed_h) // 2 + trimmed_h]
    return transforms.Compose([
        transforms.Resize(list(size), interpolation=transforms.InterpolationMode.BILINEAR,
                          antialias=True),
        transforms.CenterCrop(list(size))])(images).float()


def load_audio_clip(av_reader, clip_start_timestamp: float, clip_duration: float, audio_sr: int):
    """load_audio_clip_from_videoreader, then torchaudio's resample and waveform_to_melspectrogram
    (tests/kaldi_reference.py): (mel, the AAC frames' indices)."""
    av_reader.set_current_stream("audio")
    audio_frames, audio_indices = [], []
    for frame in itertools.takewhile(lambda x: x['pts'] <= clip_start_timestamp + clip_duration,
                                     av_reader.seek(clip_start_timestamp)):
        if frame['pts'] >= clip_start_timestamp and \
                frame['pts'] <= clip_start_timestamp + clip_duration:
            frame_data = frame["data"]
            t, c = frame_data.shape
            frame_data = frame_data.contiguous().view(c, t).contiguous()
            audio_frames.append(frame_data)
            audio_indices.append(frame["index"])
    audio = kref.resample(torch.cat(audio_frames, dim=1).numpy(), audio_sr, 16000)
    # the released chain is float32 from here on (torchaudio returns the input dtype)
    mel = torch.from_numpy(kref.released_mel(audio.astype(np.float32)))  # waveform_to_melspectrogram
    return mel, audio_indices


def mel_close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Our mel (float32 torch, equal to the real torchaudio's in tests/decoding/test_mel.py)
    against the numpy reference. Two float32 FFTs disagree in the bins far below the tone's
    peak (these clips are a pure 440 Hz tone and clicks: ~1e-8 of the peak energy there), so
    the two agree to 0.9e-5 .. 6.5e-5 in L2 and 1e-3 in the worst bin here; the audio one
    AAC frame later (64 ms at 16 kHz) is 1.0 off in L2 (relative)."""
    d = got.double() - want.double()
    return bool(d.norm() <= 1e-4 * want.norm() and d.abs().max() <= 2e-3)


# ---------------------------------------------------------------- tests

def test_frame_choice_drifts_to_the_next_source_frame_at_30_fps():
    # frames of a 30-fps mp4 (time base 1/15360): pts_us = round(512 i 1e6 / 15360)
    pts = np.array([round(Fraction(512 * i * 1_000_000, 15360)) * 1e-6 for i in range(90)])
    # window at 0.5 s: the exact frames are 15 + 5k. Frames 25, 40, 55, 70 sit at
    # x.833333 / x.333333 s (rounded down to whole us) while the released target there is
    # 0.5 + k * (1/6) in float64 (0.8333333333333333, ...): bigger, so the next frame is taken.
    # At k = 3, 6, 9 the accumulated float lands at or below the frame (0.9999999999999999,
    # 1.5, 2.0), so those stay exact.
    t, acc = 0.5, []
    for _ in range(12):
        acc.append(t)
        t += 1 / 6
    assert acc[2] > 0.833333 and acc[3] <= 1.0 and acc[6] <= 1.5 and acc[9] <= 2.0
    assert released_frame_picks(pts, 0.5) == [15, 20, 26, 30, 35, 41, 45, 50, 56, 60, 65, 71]
    # a clip too short for 12 picks repeats the last frame; none at all gives []
    assert released_frame_picks(pts[:40], 0.5) == [15, 20, 26, 30, 35] + [35] * 7
    assert released_frame_picks(pts[:10], 0.5) == []


def test_released_window_start():
    rng = random.Random(0)
    assert released_start(3.0, False, rng) == 0.5
    assert released_start(1.5, False, rng) == 0.0
    assert released_start(1.5, True, rng) == 0.0  # uniform(0, -0.5) <= 0
    starts = [released_start(4.0, True, rng) for _ in range(200)]
    assert 0.0 <= min(starts) < 0.2 and 1.8 < max(starts) <= 2.0


@pytest.mark.parametrize("name", list(CLIPS))
def test_released_convention_matches_the_released_dataset(clips, name):
    """Same window (centred, and three train starts): identical frame indices, identical
    AAC frames, and the same video and mel tensors."""
    path = clips[name]
    data = path.read_bytes()
    want_v, want_m, start, want_idx, want_audio = released_getitem(path, "test")
    got_v, got_m, got_start = ClipDecoder(train=False, convention="released").decode(
        data, random.Random(0))
    assert got_start == start
    assert got_v.shape == want_v.shape == (3, 12, 256, 256) and got_m.shape == (1, 128, 204)
    assert torch.allclose(got_v, want_v, atol=1e-6), (got_v - want_v).abs().max()
    assert mel_close(got_m, want_m), (got_m - want_m).abs().max()
    clip = decode_released(data, start)
    assert clip.frame_index == want_idx
    assert clip.audio_frames == want_audio
    for s in (0.0, 0.2371, 0.4999999):
        _, want_m2, s2, want_idx2, want_audio2 = released_getitem(path, "train", start=s)
        clip = decode_released(data, s2)
        assert clip.frame_index == want_idx2, s
        assert clip.audio_frames == want_audio2, s
        assert mel_close(clip.mel, want_m2)


def test_pixels_show_the_chosen_frames_and_audio_starts_at_an_aac_frame(clips):
    path = clips["30fps_mono16k"]  # 3.0 s: centred window at 0.5 s, as in the pure test above
    clip = decode_released(path.read_bytes(), 0.5)
    assert clip.frame_index == [15, 20, 26, 30, 35, 41, 45, 50, 56, 60, 65, 71]
    v = clip.video * 255  # [3, 12, 256, 256]
    seen = [index_of(float(v[:, k, 20:100].mean()), float(v[:, k, 156:236].mean()))
            for k in range(12)]
    assert seen == clip.frame_index
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        pts = [float(f.pts * a.time_base) for f in c.decode(a)]
    first = clip.audio_frames[0]
    assert pts[first] >= 0.5 > pts[first - 1]  # the first AAC frame at or after the window
    assert all(0.5 <= pts[i] <= 2.5 for i in clip.audio_frames)
    assert clip.audio_frames == list(range(first, clip.audio_frames[-1] + 1))


def test_make_dataset_released_convention(clips, tmp_path):
    names = ["30fps_mono16k", "25fps_stereo44k", "short_30fps"]
    samples = [Sample(key=f"drum_beat-Yt{i:03d}abcdefg_000000_000010_0p0_3p0", mp4=clips[n],
                      meta={"class_name": "drum_beat"}, class_index=0, text="drum beat",
                      duration=CLIPS[n][0]) for i, n in enumerate(names)]
    write_shards(tmp_path / "out", samples, "test", max_count=8)
    urls = shard_urls(tmp_path / "out" / "shards", "test")
    by_key = {s.key: n for s, n in zip(samples, names)}
    got = sorted(make_dataset(urls, "test", convention="released"), key=lambda x: x["key"])
    exact = sorted(make_dataset(urls, "test"), key=lambda x: x["key"])
    assert len(got) == len(exact) == 3
    for g, e in zip(got, exact):
        n = by_key[g["key"]]
        want_v, want_m, start, _, _ = released_getitem(clips[n], "test")
        assert g["video"].shape == (3, 12, 256, 256) and e["video"].shape == (12, 3, 256, 256)
        assert g["start"] == start
        assert torch.allclose(g["video"], want_v, atol=1e-6)
        assert mel_close(g["audio"], want_m)
    # the two conventions differ (frame choice, pixels, audio window, channel handling)
    assert not torch.allclose(got[0]["video"].permute(1, 0, 2, 3), exact[0]["video"], atol=1e-3)
    assert not torch.allclose(got[1]["audio"], exact[1]["audio"], atol=1e-3)
    with pytest.raises(ValueError, match="convention"):
        make_dataset(urls, "test", convention="paper")
