#!/usr/bin/env bash
# Wheels that must travel to the lent GPU machine with benchmarks/device_check.py.
#
#   bash scripts/device_bundle.sh            # into .whl/ (ignored by git), prints sizes
#   WHEEL_DIR=/tmp/w bash scripts/device_bundle.sh
#
# The lent machine (python 3.12, torch 2.11 CUDA, torchvision, timm, regex, tqdm,
# huggingface_hub, pillow...; see the device README) lacks what our code imports at module
# level for CLIP and decoding: open_clip_torch (and ftfy -> wcwidth for its tokenizer, which
# ImageBind's text side uses too) and PyAV. Nothing can be fetched there, so cp312 manylinux
# x86-64 wheels are downloaded here (no dependencies resolved: each is named) and installed
# there by device_check.py with `pip install --no-index --no-deps --target`. Ray (79 MB)
# does not fit the 64 MiB that travels; the check measures the Ray path only where Ray is.
# PyNvVideoCodec (NVDEC decode, decoding/gpu.py) travels slimmed: its wheel (25.6 MiB) also
# holds FFmpeg's source tarball, samples and benchmarks, none of which is imported; after its
# sha256 is checked they are dropped (with their RECORD lines), leaving the modules and the
# libavformat/libavutil/cudart libraries it loads.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${WHEEL_DIR:-.whl}"
PY="${PYTHON:-python3}"
# pinned: the versions the check was written against (one version of each, or the install stops)
WHEELS=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13 av==18.1.0 pynvvideocodec==2.2.4)
NVC_WHEEL=pynvvideocodec-2.2.4-cp312-cp312-manylinux_2_28_x86_64.whl
NVC_SHA256=41ad2b4d010ed22eb46c849d3e792789ae06281f6b41767c1b25f76f130aee98
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DEST" "${WHEELS[@]}"
echo "$NVC_SHA256  $DEST/$NVC_WHEEL" | sha256sum -c --quiet
"$PY" - "$DEST/$NVC_WHEEL" <<'SLIM'
import sys, zipfile
path = sys.argv[1]
drop = ("pynvvideocodec-2.2.4.data/", "samples/", "benchmarks/")
with zipfile.ZipFile(path) as z:
    items = [(i, z.read(i)) for i in z.infolist() if not i.filename.startswith(drop)]
out = []
for info, data in items:
    if info.filename.endswith(".dist-info/RECORD"):
        data = b"".join(l for l in data.splitlines(keepends=True) if not l.decode().startswith(drop))
    out.append((info, data))
with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as z:
    for info, data in out:
        z.writestr(info, data)
import os
os.replace(path + ".tmp", path)
SLIM
echo "wheels in $DEST:"
ls -l "$DEST"/*.whl | awk '{printf "  %8.1f MiB  %s\n", $5 / 1048576, $NF}'
wheels=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
total=$((wheels + tree + ${untracked:-0}))
printf "wheels %.1f MiB + tracked tree %.1f MiB + untracked %.1f MiB = %.1f MiB of the 64 MiB that travel\n" \
    "$(echo "$wheels / 1048576" | bc -l)" "$(echo "$tree / 1048576" | bc -l)" \
    "$(echo "${untracked:-0} / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -gt $((64 * 1048576)) ]; then
    echo "too big to travel: drop av from WHEELS (the decode section is then skipped)" >&2
    exit 1
fi
