#!/usr/bin/env bash
# The workflow without expert masks, end to end: split → label → pretrain on the k-means
# labels → classifiers (threshold, and scratch to compare) → evaluate on the held-out cases.
#
# Usage: bash examples/no-expert/run.sh ROOT TABLE OUT
#   ROOT   folder the table's paths are relative to (or a folder of class sub-folders)
#   TABLE  CSV/TSV of image (id or path) and class, e.g. brain MRI JPEGs with a file,class table
#   OUT    folder for everything this writes
# Sizes can be set from the environment: K, SIZE, N_S, EPOCHS_SEG, EPOCHS_CLF, TEST_PER_CLASS,
# THREADS (e.g. THREADS=1 on a shared machine).
set -euo pipefail

ROOT="$1"; TABLE="$2"; OUT="$3"
K="${K:-4}"; SIZE="${SIZE:-64}"; N_S="${N_S:-8}"; THREADS="${THREADS:-1}"
EPOCHS_SEG="${EPOCHS_SEG:-10}"; EPOCHS_CLF="${EPOCHS_CLF:-50}"; TEST="${TEST_PER_CLASS:-20}"
mkdir -p "$OUT"

echo "== split: $TEST test cases per class, the rest for training (train.tsv, test.tsv)"
segfew split --table "$TABLE" --test-per-class "$TEST" --seed 0 --out "$OUT/splits"

echo "== label: k-means pseudo-labels of the training images (k = $K: labels 0..$K)"
segfew label --images "$ROOT" --table "$OUT/splits/train.tsv" --k "$K" --threads "$THREADS" \
    --out "$OUT/kmeans"

echo "== pretrain: the M-Net on the k-means labels (no label names needed)"
segfew pretrain --images "$ROOT" --table "$OUT/splits/train.tsv" --labels "$OUT/kmeans" \
    --dim 2 --n-s "$N_S" --size "$SIZE" --intensity minmax --epochs "$EPOCHS_SEG" \
    --threads "$THREADS" --out "$OUT/seg-kmeans.pt"

for FW in threshold scratch; do
    echo "== train-classifier: framework $FW"
    FEATURES=(); [ "$FW" = threshold ] && FEATURES=(--features "$OUT/seg-kmeans.pt")
    segfew train-classifier --images "$ROOT" --table "$OUT/splits/train.tsv" --framework "$FW" \
        "${FEATURES[@]}" --size "$SIZE" --epochs "$EPOCHS_CLF" \
        --threads "$THREADS" --out "$OUT/clf-$FW.pt"
    echo "== evaluate: framework $FW on the held-out cases"
    segfew evaluate --model "$OUT/clf-$FW.pt" --images "$ROOT" --table "$OUT/splits/test.tsv" \
        --threads "$THREADS" --out "$OUT/eval-$FW"
done
echo "Done: $OUT/eval-threshold/metrics.json and $OUT/eval-scratch/metrics.json"
