"""The one way the package runs ffmpeg: an argument list (never a shell string), a time
limit, stderr kept for the message. Callers turn ``FfmpegError`` into their own failure
(``CutError``, a download's recorded reason)."""
from __future__ import annotations

import functools
import shutil
import subprocess

from manifests.faults import FAULT_TEXT, EnvironmentFault
from manifests.scratch import write_fault

#: what to do when ffmpeg is not there (an environment fault, never an item's failure)
FFMPEG_MISSING = "ffmpeg not found on PATH: install ffmpeg (e.g. apt install ffmpeg) or add its folder to PATH"


class FfmpegError(RuntimeError):
    """ffmpeg ran over its time limit (``timed_out``) or exited non-zero (``returncode``,
    ``stderr``)."""

    def __init__(self, message: str, *, timed_out: bool = False, returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.returncode = returncode
        self.stderr = stderr


@functools.lru_cache(maxsize=1)
def _death_signal_prefix() -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL --`` where util-linux's setpriv has the option, else ().

    A killed build's worker ends through its watchdog, which kills the worker's children and
    exits; an ffmpeg forked in the instant between the two would outlive it and go on writing
    under ``--out``. With the parent-death signal the kernel kills ffmpeg whenever the
    process that started it ends, whatever the timing."""
    exe = shutil.which("setpriv")
    if exe is None:
        return ()
    try:
        probe = subprocess.run([exe, "--pdeathsig", "KILL", "--", "true"], capture_output=True,
                               timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (exe, "--pdeathsig", "KILL", "--") if probe.returncode == 0 else ()


def run_ffmpeg(cmd: list[str], timeout: float) -> None:
    """Run ``cmd`` (``["ffmpeg", ...]``); raise ``FfmpegError`` on a timeout or a failure.
    ffmpeg missing, or a write its disk refused (full, read-only: the last argument is the
    output), is an ``EnvironmentFault`` naming what to change. ffmpeg dies with the process
    that runs it (``_death_signal_prefix``)."""
    prefix = _death_signal_prefix()
    if shutil.which(cmd[0]) is None:
        raise EnvironmentFault(FFMPEG_MISSING if cmd[0] == "ffmpeg" else f"{cmd[0]} not found on PATH")
    try:
        res = subprocess.run([*prefix, *cmd], capture_output=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise FfmpegError(f"ffmpeg ran over {timeout:g} s", timed_out=True) from e
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace")
        m = FAULT_TEXT.search(err)
        if m:
            raise write_fault(cmd[-1], f"ffmpeg: {m.group(0)}")
        raise FfmpegError(f"ffmpeg exited with {res.returncode}", returncode=res.returncode, stderr=err)
