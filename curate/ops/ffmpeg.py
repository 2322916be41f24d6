"""The one way the package runs ffmpeg: an argument list (never a shell string), a time
limit, stderr kept for the message. Callers turn ``FfmpegError`` into their own failure
(``CutError``, a download's recorded reason)."""
from __future__ import annotations

import subprocess


class FfmpegError(RuntimeError):
    """ffmpeg ran over its time limit (``timed_out``) or exited non-zero (``returncode``,
    ``stderr``)."""

    def __init__(self, message: str, *, timed_out: bool = False, returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.returncode = returncode
        self.stderr = stderr


def run_ffmpeg(cmd: list[str], timeout: float) -> None:
    """Run ``cmd`` (``["ffmpeg", ...]``); raise ``FfmpegError`` on a timeout or a failure.
    An ``OSError`` (ffmpeg not on PATH) is left to the caller."""
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise FfmpegError(f"ffmpeg ran over {timeout:g} s", timed_out=True) from e
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace")
        raise FfmpegError(f"ffmpeg exited with {res.returncode}", returncode=res.returncode, stderr=err)
