"""CLIP text encodings of an export's prompts, as the released AVSyncD trainer reads them.

The released generation code (lzhangbj/ASVA) never runs a text encoder while training:

* ``avgen/data/base.py`` loads ``class_text_encoding_mapping_pt`` with ``torch.load`` and
  looks each clip's prompt up in it (``class_mapping.json[class] -> prompt -> tensor``); the
  DataLoader stacks the tensors to ``[B, 77, 768]``, which the trainer passes to the UNet as
  ``encoder_hidden_states``. So the file is a plain ``dict`` prompt -> float tensor ``[77, 768]``.
* ``avgen/models/trainers/audio_cond_animation_trainer.py`` loads
  ``pretrained/openai-clip-l_null_text_encoding.pt`` and ``.view``\\ s it as ``[1, 1, 77, 768]``
  (the pipeline as ``[1, 77, 768]``): the encoding of the empty prompt, used when the text
  condition is dropped.

Both are what Stable Diffusion 1.5's pipeline computes: its CLIP ViT-L/14 text encoder's last
hidden state (after the final layer norm, all 77 positions), for token ids made the way SD's
``CLIPTokenizer`` makes them (``padding="max_length", max_length=77, truncation=True``):
``<|startoftext|>``, the BPE tokens (at most 75), ``<|endoftext|>``, then ``<|endoftext|>``
again as padding (SD's pad token). No attention mask.

Two local encoder forms are read (nothing is downloaded; ``--text-encoder PATH``):

* a transformers ``CLIPTextModel`` folder (``config.json`` + weights) with its tokenizer in the
  same folder or in a sibling ``tokenizer/``, or the Stable Diffusion folder holding both
  (``stable-diffusion-v1-5/`` with ``text_encoder/`` and ``tokenizer/``). Needs the optional
  ``transformers`` package (``pip install 'curate[export]'``).
* an open_clip ViT-L-14 state dict (``.pt``/``.pth``/``.bin``/``.safetensors``: a whole CLIP
  or its text tower), read with ``torch.load(weights_only=True)`` or safetensors. It is
  OpenAI's CLIP, so its MLPs use QuickGELU; tokens come from open_clip's bundled BPE vocab,
  arranged as SD arranges them (open_clip's own ``tokenize`` pads with 0, SD with 49407).

Files are written through ``torch.save`` into memory, then atomically: same encoder and
prompts, same bytes.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from filters.torch_compat import import_open_clip, import_torchvision
from manifests.atomic import write_bytes

log = logging.getLogger(__name__)

PROMPT_FILE = "class_clip_text_encodings_stable-diffusion-v1-5.pt"
NULL_FILE = "openai-clip-l_null_text_encoding.pt"
CONTEXT = 77
WIDTH = 768
SOT_ID = 49406
EOT_ID = 49407  # also SD-1.5's pad token
OPTION = "--text-encoder"
BATCH = 16


class TextEncoderError(ValueError):
    """The text encoder at ``--text-encoder`` cannot be used (names the path and why)."""


@dataclass
class TextEncoder:
    """A loaded encoder: ``encode(prompts) -> float32 [n, 77, 768]``."""
    kind: str            # "transformers" or "open_clip"
    path: str
    encode_batch: Callable[[list[str]], torch.Tensor]

    def encode(self, prompts: list[str]) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, len(prompts), BATCH):
                out.append(self.encode_batch(prompts[i:i + BATCH]).to(torch.float32))
        if not out:
            return torch.zeros(0, CONTEXT, WIDTH)
        enc = torch.cat(out)
        if tuple(enc.shape[1:]) != (CONTEXT, WIDTH):
            raise TextEncoderError(
                f"{OPTION} {self.path}: encodings are {list(enc.shape[1:])}, Stable Diffusion 1.5 "
                f"conditions on [{CONTEXT}, {WIDTH}] (CLIP ViT-L/14's text encoder)")
        return enc


def sd_token_ids(bpe_ids: list[list[int]]) -> torch.Tensor:
    """SD's ids for BPE token lists: SOT, at most 75 tokens, EOT, EOT padding to 77."""
    out = torch.full((len(bpe_ids), CONTEXT), EOT_ID, dtype=torch.long)
    for i, ids in enumerate(bpe_ids):
        row = [SOT_ID, *ids[:CONTEXT - 2], EOT_ID]
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


# ---------------------------------------------------------------- transformers folder

def _hf_dirs(path: Path) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) of a CLIPTextModel folder or an SD pipeline folder."""
    if (path / "text_encoder" / "config.json").is_file():
        return path / "text_encoder", path / "tokenizer"
    if not (path / "config.json").is_file():
        raise TextEncoderError(
            f"{OPTION} {path}: a folder without config.json (nor text_encoder/config.json): "
            "give a transformers CLIPTextModel folder, the Stable Diffusion 1.5 folder, or an "
            "open_clip ViT-L-14 checkpoint file")
    for tok in (path, path.parent / "tokenizer"):
        if (tok / "vocab.json").is_file() and (tok / "merges.txt").is_file():
            return path, tok
    raise TextEncoderError(f"{OPTION} {path}: no CLIP tokenizer (vocab.json + merges.txt) in the "
                           f"folder or in {path.parent / 'tokenizer'}")


def _load_transformers(path: Path) -> TextEncoder:
    import_torchvision()  # transformers may import it; see filters.torch_compat
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as e:
        raise TextEncoderError(
            f"{OPTION} {path}: a transformers folder needs the optional 'transformers' package "
            "(pip install 'curate[export]'), or pass an open_clip ViT-L-14 checkpoint file") from e
    model_dir, tok_dir = _hf_dirs(path)
    try:
        # local files only; safetensors (or a weights_only torch.load) inside transformers
        model = CLIPTextModel.from_pretrained(str(model_dir), local_files_only=True,
                                              torch_dtype=torch.float32)
        tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise TextEncoderError(f"{OPTION} {path}: cannot load a CLIPTextModel: {e}") from e
    model.eval()

    def encode_batch(prompts: list[str]) -> torch.Tensor:
        ids = tokenizer(prompts, padding="max_length", max_length=CONTEXT, truncation=True,
                        return_tensors="pt").input_ids
        return model(ids)[0]  # last_hidden_state, what SD's pipeline conditions on

    return TextEncoder("transformers", str(path), encode_batch)


# ---------------------------------------------------------------- open_clip checkpoint

def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise TextEncoderError(f"{OPTION} {path}: reading .safetensors needs the "
                                   "'safetensors' package") from e
        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - unpickling refusals come in many types
            raise TextEncoderError(
                f"{OPTION} {path}: not a plain state dict readable with weights_only=True ({e}); "
                "a TorchScript archive (OpenAI's original ViT-L-14.pt) is not read: use the "
                "Stable Diffusion text_encoder folder or an open_clip state dict") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise TextEncoderError(f"{OPTION} {path}: expected a state dict, got {type(sd).__name__}")
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        k = k[len("text."):] if k.startswith("text.") else k
        if isinstance(v, torch.Tensor):
            out[k] = v
    return out


def _text_tower(sd: dict[str, torch.Tensor], path: Path):
    import_open_clip()
    from open_clip.transformer import QuickGELU, TextTransformer
    need = ("token_embedding.weight", "positional_embedding", "ln_final.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise TextEncoderError(f"{OPTION} {path}: not an open_clip CLIP text tower "
                               f"(missing {', '.join(missing)})")
    vocab, width = sd["token_embedding.weight"].shape
    context = sd["positional_embedding"].shape[0]
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    fc = sd.get("transformer.resblocks.0.mlp.c_fc.weight")
    if layers == 0 or fc is None:
        raise TextEncoderError(f"{OPTION} {path}: no transformer.resblocks.* weights")
    proj = sd.get("text_projection")
    tower = TextTransformer(context_length=context, vocab_size=vocab, width=width,
                            heads=max(width // 64, 1), layers=layers,
                            mlp_ratio=fc.shape[0] / width,
                            output_dim=None if proj is None else proj.shape[-1],
                            act_layer=QuickGELU, output_tokens=True)
    keys = set(tower.state_dict())
    try:
        tower.load_state_dict({k: v for k, v in sd.items() if k in keys}, strict=True)
    except RuntimeError as e:
        raise TextEncoderError(f"{OPTION} {path}: weights do not fit a CLIP text tower: {e}") from e
    return tower.float().eval()


def _load_open_clip(path: Path) -> TextEncoder:
    import_open_clip()
    from open_clip.tokenizer import SimpleTokenizer
    tower = _text_tower(_read_state_dict(path), path)
    bpe = SimpleTokenizer()  # open_clip's bundled OpenAI BPE vocab (bpe_simple_vocab_16e6)

    def encode_batch(prompts: list[str]) -> torch.Tensor:
        ids = sd_token_ids([bpe.encode(p) for p in prompts])
        if int(ids.max()) >= tower.vocab_size:
            raise TextEncoderError(f"{OPTION} {path}: vocabulary of {tower.vocab_size} tokens is "
                                   "smaller than CLIP's 49408")
        _, tokens = tower(ids)
        return tokens

    return TextEncoder("open_clip", str(path), encode_batch)


def load_text_encoder(path: str | Path) -> TextEncoder:
    """The encoder at ``path`` (transformers folder or open_clip checkpoint); see module doc."""
    path = Path(path)
    if not path.exists():
        raise TextEncoderError(f"{OPTION} {path}: no such file or folder")
    if path.is_dir():
        return _load_transformers(path)
    return _load_open_clip(path)


# ---------------------------------------------------------------- files

def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()  # in memory: the archive's inner folder is "archive", not a temp name
    torch.save(obj, buf)
    return buf.getvalue()


def prompts_of(mapping_path: str | Path) -> list[str]:
    """The distinct prompts of a ``class_mapping.json``, sorted."""
    mapping = json.loads(Path(mapping_path).read_text())
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ValueError(f"{mapping_path}: expected a JSON object class -> prompt string")
    return sorted(set(mapping.values()))


def write_text_encodings(dest: str | Path, encoder: TextEncoder,
                         prompts: Iterable[str] | None = None) -> dict[str, str]:
    """Write ``PROMPT_FILE`` (dict prompt -> float32 [77, 768]) for ``prompts`` (default: those
    of ``dest/class_mapping.json``) and ``NULL_FILE`` (float32 [1, 77, 768], the empty prompt)
    under ``dest``. Returns {name: path}."""
    dest = Path(dest)
    prompts = prompts_of(dest / "class_mapping.json") if prompts is None else sorted(set(prompts))
    enc = encoder.encode([*prompts, ""])
    table = {p: enc[i].clone().contiguous() for i, p in enumerate(prompts)}
    null = enc[-1:].clone().contiguous()
    out = {PROMPT_FILE: dest / PROMPT_FILE, NULL_FILE: dest / NULL_FILE}
    write_bytes(out[PROMPT_FILE], _torch_bytes(table))
    write_bytes(out[NULL_FILE], _torch_bytes(null))
    log.info("text encodings of %d prompts (%s encoder %s) written to %s", len(prompts),
             encoder.kind, encoder.path, dest)
    return {k: str(v) for k, v in out.items()}


def read_text_encodings(path: str | Path) -> dict[str, torch.Tensor]:
    """A prompt-encoding file, read safely (``weights_only=True``)."""
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict prompt -> tensor, got {type(obj).__name__}")
    return obj


def stale_prompts(dest: str | Path) -> list[str] | None:
    """Prompts of ``dest/class_mapping.json`` missing from an existing ``PROMPT_FILE``; None
    when there is no such file."""
    dest = Path(dest)
    f = dest / PROMPT_FILE
    if not f.is_file():
        return None
    have = read_text_encodings(f)
    return [p for p in prompts_of(dest / "class_mapping.json") if p not in have]
