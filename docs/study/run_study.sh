#!/usr/bin/env bash
# The small-batch study behind docs/RESULTS.md: tools/compare_norms.py in both designs, 3 seeds,
# on the toy shapes (controlled design) and on BCCD and raccoon (both designs). The estimates
# per stage assume 2 cores (bf16 on the real data, fp32 on the toy); docs/RESULTS.md has the
# measured times (BCCD: 37 min per design on a Xeon with AMX, 2026-12-05). A CPU without bf16
# units (no amx_bf16 / avx512_bf16) trains the real data in fp32, about 3x as long: raccoon's
# controlled design took 26 min in bf16 on the Xeon, 89 min in fp32 on an AMD EPYC, and its budget
# design 1 h 51 min in fp32 there (2026-12-06).
#
#   bash docs/study/run_study.sh convert          # the COCO files and the toy shapes, once
#   bash docs/study/run_study.sh toy              # ~1.7 h measured (fp32, 36 cells)
#   bash docs/study/run_study.sh bccd             # 1.2 h measured (controlled 37 min, budget 37 min)
#   bash docs/study/run_study.sh raccoon          # ~1 h with bf16 units, 3.3 h measured without
#   bash docs/study/run_study.sh tune bccd        # optional: the budget rule 1x vs 2x, ~0.5 h
#   bash docs/study/run_study.sh commit           # per-cell results -> docs/study/ (git add them)
#
# Every stage can be stopped (Ctrl-C) and rerun: finished cells are reused, an interrupted one
# continues from its checkpoint. In a new checkout (output/ gone), the cells committed under
# docs/study/ are taken instead of trained where config and training precision match
# (--reuse-from), so a study that `commit` saved half-done continues where it stopped.
# Outputs: output/study/<dataset>/<design>/ (results.md, .csv, .json, ap_vs_batch.png,
# ap50_vs_batch.png, one folder per cell). `commit` copies the tables,
# results.json and the plots to docs/study/<dataset>/<design>/, from which
#   python tools/compare_norms.py --rebuild-from docs/study/bccd/controlled/results.json --out DIR
# rebuilds them without training.
# SMOKE=1 runs each stage's grid for 2 steps and 1 seed into output/study_smoke (a check of the
# commands, minutes; not a result).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/study}
SEEDS=${SEEDS:-3}
SMOKE_FLAGS=()
if [[ "${SMOKE:-0}" == 1 ]]; then
  OUT=output/study_smoke
  SEEDS=1
  SMOKE_FLAGS=(--max-images 8 --warmup-images 0 --steps "")
fi
# 2 cells at a time, 1 torch thread each (the fastest use of 2 cores); niced: the cores are shared.
RUN=(nice -n 10 "$PY" tools/compare_norms.py --jobs 2 --threads 1 --seeds "$SEEDS"
     --delete-weights)
# --reuse-from the committed results of $1 (dataset/design), where there are any
reuse() { [[ -f docs/study/$1/results.json && "${SMOKE:-0}" != 1 ]] &&
            echo "docs/study/$1/results.json" || true; }
S=../shared/data
C=output/real/coco

convert() {  # docs/REAL_DATA.md section 1, and the toy shapes
  for split in train val tune_train tune_val; do
    list=datasets/bccd/$split.txt
    [[ $split == train || $split == val ]] && list=$S/bccd/ImageSets/Main/$split.txt
    "$PY" datasets/voc_to_coco.py --xml-dir $S/bccd/Annotations --classes RBC,WBC,Platelets \
        --list "$list" --image-dir $S/bccd/JPEGImages --out $C/bccd_$split.json
    "$PY" datasets/voc_to_coco.py --xml-dir $S/raccoon/annotations \
        --list datasets/raccoon/$split.txt --image-dir $S/raccoon/images \
        --out $C/raccoon_$split.json
  done
  test -f datasets/shapes/annotations/val.json || "$PY" datasets/make_shapes.py --out datasets/shapes
}

toy() {  # controlled design: 2000 images = 250 steps of 8, SGD 0.02, fp32 (bf16 is no faster
         # at 160 px). BN at every batch, BRN and GN at 1 and 8, the other batch-independent norms
         # at 8 only (their cells are one training at every batch); FrozenBN from scratch shows
         # what it does without statistics
  local R
  R=$(reuse toy/controlled)
  "${RUN[@]}" --design controlled --base-config configs/toy/compare_norms_shapes.yaml \
      --batches 1,2,4,8 --presets bn_all,brn_all,gn_all,gnws_all,frn_all,evonorm_all,frozenbn \
      --preset-batches brn_all=1,8 --preset-batches gn_all=1,8 --preset-batches gnws_all=8 \
      --preset-batches frn_all=8 --preset-batches evonorm_all=8 --preset-batches frozenbn=8 \
      "${SMOKE_FLAGS[@]}" ${R:+--reuse-from "$R"} --out "$OUT/toy" MODEL.PRECISION fp32
}

real() {  # $1: bccd or raccoon; the base config holds the model, data and schedule
  local base=configs/study/Base-Study-${2}.yaml R
  R=$(reuse "$1/controlled")
  # controlled: 480 images = 120 steps of 4 (1 x 4, 2 x 2, 4 x 1), AdamW 0.002
  "${RUN[@]}" --design controlled --base-config "$base" --batches 1,2,4 \
      --presets bn_all,brn_all,gn_all,gnws_all --preset-batches brn_all=1,4 \
      --preset-batches gn_all=1,4 --preset-batches gnws_all=4 \
      "${SMOKE_FLAGS[@]}" ${R:+--reuse-from "$R"} --out "$OUT/$1"
  R=$(reuse "$1/budget")
  # budget: 360 images at b = 1, 2 (360, 180 steps); b = 4 gets the floor of b = 2's 180 steps
  "${RUN[@]}" --design budget --base-config "$base" --batches 1,2,4 \
      --presets bn_all,gn_all,gnws_all --max-images 360 --min-steps-batch 2 \
      "${SMOKE_FLAGS[@]}" ${R:+--reuse-from "$R"} --out "$OUT/$1"
}

tune() {  # $1: bccd or raccoon. The budget rule on the tune split, 1 seed: does doubling the
          # images (and steps) still move AP? If not, the cells are as converged as they get.
  local base=configs/study/Base-Study-${2}.yaml
  for scale in 1 2; do
    "${RUN[@]}" --seeds 1 --design budget --base-config "$base" --batches 1,4 \
        --presets bn_all,gn_all --max-images $((360 * scale)) --min-steps-batch 2 \
        --dataset "${1}_tune_train" "${1}_tune_val" "${SMOKE_FLAGS[@]}" \
        --out "$OUT/tune/${1}_${scale}x"
  done
}

commit() {  # the per-cell results and what they rebuild, small files only
  for d in toy/controlled bccd/controlled bccd/budget raccoon/controlled raccoon/budget; do
    [[ -f "$OUT/$d/results.json" ]] || continue
    mkdir -p "docs/study/$d"
    cp "$OUT/$d"/results.{json,csv,md} "$OUT/$d"/ap_vs_batch.png "$OUT/$d"/ap50_vs_batch.png \
        "docs/study/$d/"
    echo "copied $OUT/$d -> docs/study/$d"
  done
}

[[ $# -gt 0 ]] || { sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 2; }
case "$1" in
  convert) convert ;;
  toy) toy ;;
  bccd) real bccd BCCD ;;
  raccoon) real raccoon Raccoon ;;
  tune) case "${2:-bccd}" in bccd) tune bccd BCCD ;; raccoon) tune raccoon Raccoon ;;
        *) echo "tune: bccd or raccoon, got ${2}" >&2; exit 2 ;; esac ;;
  commit) commit ;;
  *) echo "run_study.sh: unknown stage '$1'; valid: convert toy bccd raccoon tune commit" >&2
     exit 2 ;;
esac
