"""The executor a build asked for (``--executor``, ``--workers``, ``--address``, ``--gpus``)."""
from __future__ import annotations

from typing import Any


def make_executor(kind: str = "ray", workers: int = 2, address: str | None = None,
                  gpus: float | None = None) -> Any:
    """``ray`` (default, local Ray when no address) or ``local`` (serial, in process)."""
    if kind == "local":
        from curate.execution.local import LocalExecutor
        return LocalExecutor()
    from curate.execution.ray import RayExecutor
    return RayExecutor(workers=workers, address=address, gpus=gpus)
