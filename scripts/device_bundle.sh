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
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${WHEEL_DIR:-.whl}"
PY="${PYTHON:-python3}"
# pinned: the versions the check was written against (one version of each, or the install stops)
WHEELS=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.2.13 av==18.1.0)
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DEST" "${WHEELS[@]}"
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
