#!/usr/bin/env bash
# SegFormer-B1 speed with each depthwise-conv implementation (see README.md here).
set -euo pipefail
cd "$(dirname "$0")/.."
for impl in shift xla; do
  .venv/bin/python -m segjax.tools.benchmark --config=configs/segformer_b1_city.py \
    --config.data.crop_size="(512, 512)" --config.eval.mode=whole \
    --batch_size="${BATCH:-2}" --steps="${STEPS:-3}" --warmup=1 --dwconv_impl="$impl" | tail -1
done
