"""Text encodings of an export (curate.reports.export_text) from small randomly initialised CLIP text
encoders in the two accepted forms: a transformers CLIPTextModel folder (with a CLIPTokenizer
built from open_clip's bundled BPE vocab, the same vocab OpenAI's CLIP ships) and an open_clip
state dict converted from the same weights. 1 layer, but CLIP ViT-L/14's widths (768, 77
positions, 49408 tokens), so the files have the released shapes."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from curate.reports.export_text import EOT_ID, NULL_FILE, PROMPT_FILE, SOT_ID, TextEncoderError, load_text_encoder, read_text_encodings, sd_token_ids, write_text_encodings
from filters.torch_compat import import_open_clip, import_torchvision

PROMPTS = {"dog_barking": "dog barking", "playing_violin__fiddle": "playing violin fiddle",
           "hammering": "hammering", "lions_roaring": "lions roaring"}


def _tokenizer_files(folder: Path) -> None:
    """vocab.json + merges.txt from open_clip's BPE file (how OpenAI's CLIP vocab is built)."""
    import_open_clip()
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def _to_open_clip(hf_sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """HF CLIPTextModel weights under open_clip's text-tower names (q, k, v -> in_proj)."""
    p = "text_model." if any(k.startswith("text_model.") for k in hf_sd) else ""
    sd = {"token_embedding.weight": hf_sd[p + "embeddings.token_embedding.weight"],
          "positional_embedding": hf_sd[p + "embeddings.position_embedding.weight"],
          "ln_final.weight": hf_sd[p + "final_layer_norm.weight"],
          "ln_final.bias": hf_sd[p + "final_layer_norm.bias"],
          "text_projection": torch.randn(768, 768),  # a whole-CLIP checkpoint carries it
          "logit_scale": torch.tensor(4.6)}
    for i in range(layers):
        h, o = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        a = h + "self_attn."
        sd[o + "attn.in_proj_weight"] = torch.cat([hf_sd[a + f"{x}_proj.weight"] for x in "qkv"])
        sd[o + "attn.in_proj_bias"] = torch.cat([hf_sd[a + f"{x}_proj.bias"] for x in "qkv"])
        sd[o + "attn.out_proj.weight"] = hf_sd[a + "out_proj.weight"]
        sd[o + "attn.out_proj.bias"] = hf_sd[a + "out_proj.bias"]
        for hf, oc in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
                       ("mlp.fc2", "mlp.c_proj")):
            sd[o + oc + ".weight"] = hf_sd[h + hf + ".weight"]
            sd[o + oc + ".bias"] = hf_sd[h + hf + ".bias"]
    return sd


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    """{"hf_sd": SD-style folder (text_encoder/ + tokenizer/), "hf": its text_encoder folder,
    "open_clip": .pt state dict with the same weights}."""
    import_torchvision()  # before transformers (filters.torch_compat)
    transformers = pytest.importorskip("transformers")  # the optional extra ('curate[export]')
    d = tmp_path_factory.mktemp("text_encoders")
    torch.manual_seed(0)
    cfg = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=256, num_hidden_layers=1,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=SOT_ID, eos_token_id=EOT_ID, pad_token_id=1)
    model = transformers.CLIPTextModel(cfg).eval()
    with torch.no_grad():  # non-trivial layer norms and biases, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    root = d / "stable-diffusion-v1-5"
    (root / "tokenizer").mkdir(parents=True)
    model.save_pretrained(str(root / "text_encoder"))
    _tokenizer_files(root / "tokenizer")
    oc = d / "open_clip_vit_l14.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in
                               _to_open_clip(model.state_dict(), 1).items()}}, oc)
    return {"hf_sd": root, "hf": root / "text_encoder", "open_clip": oc}


def _dest_with_mapping(tmp_path: Path) -> Path:
    dest = tmp_path / "AVSync15"
    dest.mkdir(parents=True)
    (dest / "class_mapping.json").write_text(json.dumps(PROMPTS))
    return dest


def test_sd_token_ids_pad_with_end_of_text_like_sds_tokenizer():
    ids = sd_token_ids([[1929, 32676], [], list(range(100))])
    assert ids.shape == (3, 77)
    assert ids[0, :4].tolist() == [SOT_ID, 1929, 32676, EOT_ID] and set(ids[0, 4:].tolist()) == {EOT_ID}
    assert ids[1, 0] == SOT_ID and set(ids[1, 1:].tolist()) == {EOT_ID}
    assert ids[2, 1:76].tolist() == list(range(75)) and ids[2, 76] == EOT_ID  # truncated to 75


def test_encodings_file_has_the_released_format(encoders, tmp_path):
    dest = _dest_with_mapping(tmp_path)
    files = write_text_encodings(dest, load_text_encoder(encoders["hf_sd"]))
    assert set(files) == {PROMPT_FILE, NULL_FILE}
    table = read_text_encodings(dest / PROMPT_FILE)  # weights_only=True
    assert type(table) is dict and sorted(table) == sorted(PROMPTS.values())
    for p, t in table.items():
        assert t.dtype == torch.float32 and tuple(t.shape) == (77, 768), p
        assert torch.isfinite(t).all()
    # different prompts, different encodings; the padded tail still depends on the prompt
    assert not torch.allclose(table["dog barking"], table["hammering"])
    null = torch.load(dest / NULL_FILE, weights_only=True)
    assert null.dtype == torch.float32 and null.numel() == 77 * 768
    null.view(1, 1, 77, 768)  # what the released trainer does with it
    # the released dataset's lookup: class_mapping[class] -> prompt -> tensor; batched [B, 77, 768]
    batch = torch.stack([table[PROMPTS[c]] for c in ("dog_barking", "hammering")])
    assert batch.shape == (2, 77, 768)


def test_encodings_equal_the_models_last_hidden_state_for_sd_token_ids(encoders, tmp_path):
    from transformers import CLIPTextModel
    dest = _dest_with_mapping(tmp_path)
    write_text_encodings(dest, load_text_encoder(encoders["hf"]))  # text_encoder/ folder form
    table = read_text_encodings(dest / PROMPT_FILE)
    model = CLIPTextModel.from_pretrained(str(encoders["hf"])).eval()
    # "dog barking" in CLIP's BPE: dog</w> = 1929, barking</w> = 32676
    ids = torch.tensor([[SOT_ID, 1929, 32676] + [EOT_ID] * 74])
    with torch.no_grad():
        want = model(ids).last_hidden_state[0]
    assert torch.equal(table["dog barking"], want)
    null = torch.load(dest / NULL_FILE, weights_only=True)
    with torch.no_grad():
        want_null = model(torch.tensor([[SOT_ID] + [EOT_ID] * 76])).last_hidden_state
    assert torch.equal(null, want_null)


def test_open_clip_checkpoint_gives_the_same_encodings(encoders, tmp_path):
    a = _dest_with_mapping(tmp_path / "a")
    b = _dest_with_mapping(tmp_path / "b")
    write_text_encodings(a, load_text_encoder(encoders["hf_sd"]))
    enc = load_text_encoder(encoders["open_clip"])
    assert enc.kind == "open_clip"
    write_text_encodings(b, enc)
    ta, tb = read_text_encodings(a / PROMPT_FILE), read_text_encodings(b / PROMPT_FILE)
    assert sorted(ta) == sorted(tb)
    for p in ta:
        assert (ta[p] - tb[p]).abs().max() < 1e-4, p
    na = torch.load(a / NULL_FILE, weights_only=True)
    nb = torch.load(b / NULL_FILE, weights_only=True)
    assert (na - nb).abs().max() < 1e-4


def test_same_encoder_and_prompts_give_the_same_bytes(encoders, tmp_path):
    a = _dest_with_mapping(tmp_path / "a")
    b = _dest_with_mapping(tmp_path / "b")
    enc = load_text_encoder(encoders["open_clip"])
    write_text_encodings(a, enc)
    write_text_encodings(b, enc)
    for f in (PROMPT_FILE, NULL_FILE):
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_bad_text_encoders_are_clear_errors(tmp_path):
    with pytest.raises(TextEncoderError, match="--text-encoder .*no such file"):
        load_text_encoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderError, match="without config.json"):
        load_text_encoder(tmp_path / "empty")
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": object()}}, evil)  # needs unpickling arbitrary objects
    with pytest.raises(TextEncoderError, match="weights_only"):
        load_text_encoder(evil)
    wrong = tmp_path / "not_clip.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(TextEncoderError, match="not an open_clip CLIP text tower"):
        load_text_encoder(wrong)


# ---------------------------------------------------------------- the whole export, per recipe

#: the released README's "datasets/" tree and the configs' data roots (train, test)
RELEASED = {
    "avsync15": ("videos", "videos"),     # AVSync15: videos/<class>/
    "vggss": ("videos", "videos"),        # VGGSS: videos/<class>/
    "landscape": ("videos/train", "videos/test"),  # Landscapes: videos/{train,test}/<class>/
}


@pytest.mark.parametrize("recipe", list(RELEASED))
def test_export_run_writes_the_released_layout_with_encodings(encoders, tmp_path, recipe):
    from testkit import avmedia
    from curate.reports.export import REPORT_FILE, export_run
    from tests.fake_run import fake_run
    mp4 = avmedia.make_clip(tmp_path / "c.mp4", 2.5, "12")
    clips = [("dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0", "train", mp4),
             ("dog_barking/Zz-_0123456_000100_000110_0.0_3.25", "test", mp4),
             ("hammering/Qq_Ww-EeRrT_000000_000010_4.0_7.0", "train", mp4)]
    out = fake_run(tmp_path / "run", recipe, clips)
    dest = tmp_path / "datasets" / recipe
    res = export_run(out, dest, text_encoder=encoders["open_clip"])
    assert res.layout == ("split_class" if recipe == "landscape" else "class")
    top = sorted(p.name for p in dest.iterdir())
    assert top == sorted(["videos", "train.txt", "test.txt", "class_mapping.json", PROMPT_FILE,
                          NULL_FILE, REPORT_FILE])
    vids = sorted(p.relative_to(dest).as_posix() for p in (dest / "videos").rglob("*.mp4"))
    if recipe == "landscape":
        assert sorted(p.name for p in (dest / "videos").iterdir()) == ["test", "train"]
        assert vids == ["videos/test/dog_barking/Zz-_0123456_000100_000110_0.0_3.25.mp4",
                        "videos/train/dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0.mp4",
                        "videos/train/hammering/Qq_Ww-EeRrT_000000_000010_4.0_7.0.mp4"]
    else:
        assert sorted(p.name for p in (dest / "videos").iterdir()) == ["dog_barking", "hammering"]
        assert vids == [f"videos/{n}.mp4" for n, _, _ in sorted(clips)]
    # what the released dataset does with it: join(data_root, line), class -> prompt -> encoding
    mapping = json.loads((dest / "class_mapping.json").read_text())
    table = read_text_encodings(dest / PROMPT_FILE)
    assert sorted(table) == sorted(set(mapping.values())) == ["dog barking", "hammering"]
    for split, root in zip(("train", "test"), RELEASED[recipe]):
        lines = (dest / f"{split}.txt").read_text().splitlines()
        assert lines and all((dest / root / line).is_file() for line in lines)
        for line in lines:
            enc = table[mapping[line.split("/")[0]]]
            assert enc.dtype == torch.float32 and tuple(enc.shape) == (77, 768)
    assert torch.load(dest / NULL_FILE, weights_only=True).numel() == 77 * 768


def test_cli_adds_the_encodings_later(encoders, tmp_path):
    from testkit import avmedia
    from typer.testing import CliRunner
    from curate.cli import app
    from tests.fake_run import fake_run
    mp4 = avmedia.make_clip(tmp_path / "c.mp4", 2.5, "12")
    out = fake_run(tmp_path / "run", "avsync15",
                   [("dog_barking/AbCdEfGhIjK_000030_000040_2.5_6.0", "train", mp4),
                    ("hammering/Qq_Ww-EeRrT_000000_000010_4.0_7.0", "test", mp4)])
    dest = tmp_path / "AVSync15"
    runner = CliRunner()
    r = runner.invoke(app, ["export-folder", str(out), str(dest)])
    assert r.exit_code == 0, r.output
    assert "exported 2 clips (1 train, 1 test)" in r.output
    assert "--text-encodings-only --text-encoder PATH" in r.output
    assert "2 of 2 clips would be silently replaced" in r.output  # 2.5 s < 6 s
    assert not (dest / PROMPT_FILE).exists()
    r = runner.invoke(app, ["export-folder", str(out), str(dest), "--text-encodings-only",
                            "--text-encoder", str(encoders["hf_sd"])])
    assert r.exit_code == 0, r.output
    assert sorted(read_text_encodings(dest / PROMPT_FILE)) == ["dog barking", "hammering"]
    assert json.loads((dest / "export.json").read_text())["text_encoder"] == str(encoders["hf_sd"])
    r = runner.invoke(app, ["export-folder", str(out), str(dest)])  # re-export, no encoder
    assert r.exit_code == 0 and "kept: the existing" in r.output
    r = runner.invoke(app, ["export-folder", str(out), str(dest), "--text-encoder",
                            str(tmp_path / "nope")])
    assert r.exit_code == 2 and "--text-encoder" in r.output
