#!/usr/bin/env bash
# The segfew demo (`make demo`): every step on a small synthetic dataset, end to end.
# Usage: bash examples/demo.sh DEMO_DIR   (with segfew on PATH, as `make demo` arranges)
set -euo pipefail

DEMO="${1:-demo-run}"
DATA="$DEMO/data"
mkdir -p "$DEMO"

echo "== 1. synth: 2D phantoms, 3 classes that differ in shape and arrangement"
segfew synth --out "$DATA" --dim 2 --n-per-class 8 --size 64 --seed 0

echo "== 2. inspect: check the dataset before training on it"
segfew inspect --images "$DATA/images" --labels "$DATA/labels" --table "$DATA/labels.csv"

echo "== 3. label: k-means pseudo-labels (the paper's THRESHOLD framework), k = 4"
segfew label --images "$DATA/images" --out "$DEMO/kmeans" --k 4 --no-progress
