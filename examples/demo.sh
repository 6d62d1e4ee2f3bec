#!/usr/bin/env bash
# The segfew demo (`make demo`): every step on a small synthetic dataset, end to end.
# Usage: bash examples/demo.sh DEMO_DIR   (with segfew on PATH, as `make demo` arranges)
set -euo pipefail

# The demo's networks are tiny (64², n_s 4): one CPU thread runs them fastest and leaves the
# other cores to other jobs. segfew honours OMP_NUM_THREADS (and says so); set it to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

DEMO="${1:-demo-run}"
DATA="$DEMO/data"
mkdir -p "$DEMO"

echo "== 1. synth: 2D phantoms, 3 classes that differ in shape and arrangement"
segfew synth --out "$DATA" --dim 2 --n-per-class 10 --size 64 --seed 0 --force

echo "== 2. inspect: check the dataset before training on it"
segfew inspect --images "$DATA/images" --labels "$DATA/labels" --table "$DATA/labels.csv"

echo "== 3. label: k-means pseudo-labels (the paper's THRESHOLD framework), k = 4"
segfew label --images "$DATA/images" --out "$DEMO/kmeans" --k 4 --no-progress

echo "== 4. pretrain: a small 2D M-Net on the expert masks, and one on the k-means labels"
segfew pretrain --images "$DATA/images" --labels "$DATA/labels" --out "$DEMO/seg.pt" \
    --dim 2 --n-s 4 --size 64 --intensity minmax --epochs 15 --batch-size 8 --no-progress
segfew pretrain --images "$DATA/images" --labels "$DEMO/kmeans" --out "$DEMO/seg-kmeans.pt" \
    --dim 2 --n-s 4 --size 64 --intensity minmax --epochs 15 --batch-size 8 --no-progress

echo "== 5. train-classifier: frozen features (manual) and from scratch, 10 cases per class"
segfew train-classifier --table "$DATA/labels.csv" --images "$DATA/images" --framework manual \
    --features "$DEMO/seg.pt" --out "$DEMO/clf-manual.pt" --size 64 --epochs 25 --no-progress
segfew train-classifier --table "$DATA/labels.csv" --images "$DATA/images" --framework scratch \
    --out "$DEMO/clf-scratch.pt" --size 64 --epochs 25 --no-progress

echo "== 6. evaluate and predict on a fresh set of phantoms (another seed)"
segfew synth --out "$DEMO/test" --dim 2 --n-per-class 6 --size 64 --seed 1 --force
segfew evaluate --model "$DEMO/clf-manual.pt" --table "$DEMO/test/labels.csv" \
    --images "$DEMO/test/images" --out "$DEMO/eval-manual" --no-progress
segfew predict --model "$DEMO/clf-manual.pt" --input "$DEMO/test/images" \
    --out "$DEMO/predictions.csv" --explain "$DEMO/explain" --no-progress
segfew predict --model "$DEMO/seg.pt" --input "$DEMO/test/images" --out "$DEMO/test-seg" \
    --no-progress

echo "== 7. experiment: the paper's learning-curve protocol, ending in a report"
# On phantoms neither segmentation network saw (another seed): no test case trained the
# features, so the curve is leak-free and the report's first line says so.
segfew synth --out "$DEMO/curve-data" --dim 2 --n-per-class 10 --size 64 --seed 2 --force
# A fresh curve on every run: the networks above were just trained again, and an experiment
# folder resumes only with the networks it started with.
rm -rf "$DEMO/curve"
segfew experiment --spec examples/synthetic/curve.toml --out "$DEMO/curve" \
    --images "$DEMO/curve-data/images" --table "$DEMO/curve-data/labels.csv" \
    --features "$DEMO/seg.pt" --threshold-features "$DEMO/seg-kmeans.pt" --no-progress

echo
echo "Done. Open $DEMO/curve/report/report.html (or report.md) for the learning curves."
