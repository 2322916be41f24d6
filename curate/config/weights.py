"""The model weights the recipes use: one table, declared once (``WEIGHTS``), and the cache
they are pulled into (``curate models pull``; the transfer is ``curate.ops.pull``).

A row says what a file is, where its authors publish it, the size and checksum *they*
publish (empty where they publish none: never a figure we measured), its licence, and which
option and filter use it. A build resolves a model-backed filter's weights from the cache
when no option names a file (``curate.config.models.resolve_models``), checks each cached
file against the sha256 its pull recorded, and records file, size and sha256 in run.json.

**Adding a model** (a new filter, a new checkpoint): add one ``Weight`` row below; nothing
else lists weights. ``model`` is the key of ``filters.registry.MODEL_FILTERS`` the row serves
when no option is given, or the model of a command outside the filters (``synchformer``:
certify and ``curate metrics``; ``avid-cma``: ``curate sync train --init``), resolved by
``curate.config.models.command_weights`` (None: listed and pulled, never resolved); several
rows of one model are tried in table order. ``option`` the command-line option that names
another file (or a row's name: its cached file); ``kind``:

- ``url``: fetched from ``url`` (``curate models pull --base-url`` / ``$CURATE_WEIGHTS_URL``
  swaps the server for a mirror, or a loopback server in tests);
- ``manual``: no URL can fetch it (a Google Drive folder): ``manual`` is the step, ``file``
  where to put the result; ``curate models pull NAME`` then records its sha256;
- ``open_clip``: open_clip's own pretrained cache (``url`` is open_clip's ``hf-hub:`` id);
- ``package``: the weights ship inside a Python package (``url`` is the package's name).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

#: set to 1 (or ``--offline``): nothing fetches, nothing opens a socket for weights
OFFLINE_ENV = "CURATE_OFFLINE"
HOME_ENV = "CURATE_HOME"
BASE_URL_ENV = "CURATE_WEIGHTS_URL"
KINDS = ("url", "manual", "open_clip", "package")


@dataclass(frozen=True)
class Weight:
    name: str                    # what `curate models pull NAME` takes
    file: str                    # its name in the cache (a folder for folder weights)
    kind: str                    # url | manual | open_clip | package
    url: str                     # download URL / the authors' link / hf-hub id / package
    licence: str
    used_by: str                 # the filter or command that reads it
    option: str | None = None    # the option that names another file instead
    model: str | None = None     # MODEL_FILTERS model resolved from this row
    size: str | None = None      # as the authors publish it ("907M"); None: not published
    size_bytes: int | None = None   # the exact size where published (verified); None: not
    checksum: str | None = None  # "md5:HEX" / "sha256:HEX" as published; a short HEX is a prefix
    non_commercial: bool = False
    manual: str | None = None    # the manual step (kind manual)
    published_at: str = ""       # where the URL, size and checksum were found

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_A3S = "https://a3s.fi/swift/v1/AUTH_a235c0f452d648828f745589cde1219a/sync/sync_models"

WEIGHTS: tuple[Weight, ...] = (
    Weight("imagebind-huge", "imagebind_huge.pth", "url",
           "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
           licence="CC BY-NC 4.0 (README; the LICENSE file says CC BY-NC-SA 4.0): non-commercial",
           used_by="filter imagebind (imagebind_ia, imagebind_it); curate metrics",
           option="--imagebind-checkpoint", model="imagebind", non_commercial=True,
           published_at="facebookresearch/ImageBind README (no size or checksum published)"),
    Weight("avsync-classifier", "avsync_vggss_sync_contrast", "manual",
           "https://drive.google.com/file/d/1Paqjad4a8mjujMJBEYqmnNEgGPi595lb/view?usp=sharing",
           licence="MIT (lzhangbj/ASVA README badge; the repository has no LICENSE file)",
           used_by="filter sync (sync_a2v, sync_v2a); curate metrics, sync eval",
           option="--sync-checkpoint", model="sync",
           manual="download the AVSync Classifier (VGGSS) from {url} in a browser (Google Drive "
                  "asks for a click), unpack it, and move its folder "
                  "vggss_sync_contrast/ckpts/checkpoint-40000/modules (audio_encoder/, "
                  "video_encoder/, head/) to {path}/modules; then run `curate models pull "
                  "{name}` to record its checksum",
           published_at="lzhangbj/ASVA README (Google Drive; no size or checksum published)"),
    Weight("avid-cma-audioset", "AVID-CMA_Audioset_InstX-N1024-PosW-N64-Top32_checkpoint.pth.tar",
           "url", "https://dl.fbaipublicfiles.com/avid-cma/checkpoints/"
                  "AVID-CMA_Audioset_InstX-N1024-PosW-N64-Top32_checkpoint.pth.tar",
           licence="CC BY-NC 4.0 (facebookresearch/AVID-CMA LICENSE): non-commercial",
           used_by="curate sync train --init (both encoders of the sync classifier)",
           option="--init", model="avid-cma", non_commercial=True,
           published_at="facebookresearch/AVID-CMA README, lzhangbj/ASVA README "
                        "(no size or checksum published)"),
    Weight("clip-vit-b-32-openai", "ViT-B-32/openai", "open_clip",
           "hf-hub:timm/vit_base_patch32_clip_224.openai",
           licence="MIT (openai/CLIP)", used_by="filter clip_diff",
           option="--clip-checkpoint", model="clip",
           published_at="open_clip pretrained.py (ViT-B-32 / openai); kept in open_clip's own "
                        "cache, which the Hugging Face hub verifies"),
    # Synchformer (v-iashin/Synchformer, MIT), the DeSync model. MMAudio's state dict first:
    # where both are cached a build takes it (it loads without --trust-checkpoint; the
    # authors' .pt pickles its config)
    Weight("synchformer-mmaudio", "synchformer_state_dict.pth", "url",
           "https://github.com/hkchengrex/MMAudio/releases/download/v0.1/synchformer_state_dict.pth",
           licence="MIT (v-iashin/Synchformer weights, as MMAudio ships them)",
           used_by="certify, curate metrics: DeSync (Synchformer offsets, MMAudio's state dict)",
           option="--synchformer-checkpoint", model="synchformer",
           size="907M", checksum="md5:5b2f5594b0730f70e41e549b7c94390c",
           published_at="hkchengrex/MMAudio docs/MODELS.md (size) and "
                        "mmaudio/utils/download_utils.py (md5)"),
    # AudioSet run 2; its README publishes only the first 7 hex digits of the md5 (a prefix check)
    Weight("synchformer-audioset", "24-01-04T16-39-21.pt", "url",
           f"{_A3S}/24-01-04T16-39-21/24-01-04T16-39-21.pt",
           licence="MIT (v-iashin/Synchformer)",
           used_by="certify, curate metrics: DeSync (Synchformer offsets; needs --trust-checkpoint)",
           option="--synchformer-checkpoint", model="synchformer", checksum="md5:54037d2",
           published_at="v-iashin/Synchformer README (md5 prefix) and utils/utils.py"),
    # Silero VAD (issue 26): the real weights ship inside the wheel; ``file`` is their path
    # inside the installed package (``package_file``)
    Weight("silero-vad", "data/silero_vad_16k.safetensors", "package", "silero-vad",
           licence="MIT (snakers4/silero-vad)", used_by="filter speech (speech, speech_run_s)",
           option="--speech-checkpoint", model="silero",
           published_at="the silero-vad wheel on PyPI (silero_vad/data/); no size or checksum "
                        "published"),
)


def get_weight(name: str) -> Weight:
    for w in WEIGHTS:
        if w.name == name:
            return w
    raise ValueError(f"unknown weights {name!r} (known: {', '.join(w.name for w in WEIGHTS)})")


def for_model(model: str) -> Weight | None:
    """The row a model-backed filter resolves from the cache when no option names a file."""
    return next((w for w in WEIGHTS if w.model == model), None)


def cached_row(model: str) -> tuple[Weight, Path] | None:
    """The first row of ``model`` (table order) whose file the cache holds, and that file."""
    for w in WEIGHTS:
        if w.model == model and w.kind in ("url", "manual"):
            p = in_cache(w)
            if p is not None:
                return w, p
    return None


def row_at(path: str | os.PathLike) -> Weight | None:
    """The row whose cached file ``path`` is, else None."""
    p = Path(path)
    return next((w for w in WEIGHTS if w.kind in ("url", "manual") and cache_path(w) == p), None)


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def curate_home() -> Path:
    """``$CURATE_HOME``, else ``$XDG_CACHE_HOME/curate``, else ``~/.cache/curate``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "curate"


def cache_path(w: Weight) -> Path:
    return curate_home() / "weights" / w.file


def record_path(w: Weight) -> Path:
    """What a pull recorded of a cached file: size, sha256, where it came from."""
    return curate_home() / "weights" / f"{w.file}.json"


def read_record(w: Weight) -> dict[str, Any] | None:
    import json
    try:
        return json.loads(record_path(w).read_text())
    except (OSError, ValueError):
        return None


def in_cache(w: Weight) -> Path | None:
    """The cached file (or non-empty folder) of a url / manual row, else None."""
    p = cache_path(w)
    if p.is_file() or (p.is_dir() and any(p.iterdir())):
        return p
    return None


def package_file(w: Weight) -> Path | None:
    """The file of a ``package`` row inside the installed package (found without importing
    it), or None when the package or the file is missing."""
    import importlib.util
    spec = importlib.util.find_spec(w.url.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / w.file
    return path if path.is_file() else None


def open_clip_cached(w: Weight) -> Path | None:
    """The file open_clip would load for an ``open_clip`` row, if its cache holds it (no
    network: the Hugging Face cache is only looked at)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo = w.url.removeprefix("hf-hub:")
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def sha256_of(path: str | os.PathLike, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of a file, or of a folder (its files' relative names and contents, in order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if f is not p:
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
                if progress:
                    progress(len(block))
    return h.hexdigest()


def size_of(path: str | os.PathLike) -> int:
    p = Path(path)
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def missing_fix(w: Weight | None, option: str | None = None) -> str:
    """What fixes a missing weight: pull it (or the manual step), or name a file with the option."""
    option = option or (w.option if w is not None else None)
    if w is None:
        return f"pass {option} FILE"
    return f"{pull_hint(w)}, or pass {option} FILE" if option else pull_hint(w)


def pull_hint(w: Weight) -> str:
    """The one line that puts ``w`` in the cache."""
    if w.kind == "manual":
        return (w.manual or "").format(url=w.url, path=cache_path(w), name=w.name)
    if w.kind == "package":
        return f"pip install {w.url}"
    return f"curate models pull {w.name}"
