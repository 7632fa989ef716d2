#!/usr/bin/env bash
# The small-data recipe's ablation on the tune splits (docs/REAL_DATA.md, "Small-data recipe"):
# every piece alone over the recipe config with all pieces off, and the full recipe, x seeds, on
# BCCD and raccoon, each run evaluated on tune_val and on its own training images (tune_train,
# for the train-val gap). Runs one training at a time at nice 19; a finished run (its
# metrics_final.json exists) is skipped, so the script can be stopped and started again.
# Then the table: python docs/real_data/recipe_table.py $OUT
#
#   bash docs/real_data/recipe_ablation.sh                       # all: 2 datasets x 6 x 3 seeds
#   DATASETS=bccd VARIANTS="baseline full" SEEDS="0" bash docs/real_data/recipe_ablation.sh
#   ITERS=1200 OUT=output/recipe_ablation_1200 bash docs/real_data/recipe_ablation.sh  # shorter
#   SCHEDULE=1 bash docs/real_data/recipe_ablation.sh            # the schedule sweep instead
# The variants fp32 and bf16 set MODEL.PRECISION over CONFIG as it stands: the training
# precision's effect on accuracy (docs/PERFORMANCE.md), e.g.
#   CONFIG=configs/real/retinanet_R_18_FPN_gnws_cpu.yaml VARIANTS="bf16 fp32" \
#       OUT=output/precision_accuracy bash docs/real_data/recipe_ablation.sh
set -euo pipefail
set -f  # no globbing: the dataset opts hold [ ] brackets
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
S=${S:-../shared/data}
C=${C:-output/real/coco}
OUT=${OUT:-output/recipe_ablation}
CONFIG=${CONFIG:-configs/real/retinanet_R_18_FPN_gnws_recipe_cpu.yaml}
DATASETS=${DATASETS:-"bccd raccoon"}
VARIANTS=${VARIANTS:-"baseline lsj color crop ema full"}
SEEDS=${SEEDS:-"0 1 2"}
ITERS=${ITERS:-}  # empty: the config's schedule (SOLVER.MAX_ITER / STEPS / WARMUP_ITERS)

OFF=(INPUT.LSJ.ENABLED False INPUT.COLOR_JITTER.ENABLED False INPUT.CROP.ENABLED False
     MODEL.EMA.ENABLED False)

variant_opts() {  # the recipe's pieces for one variant: all off, then the named one(s) on
  case $1 in
    baseline) echo "${OFF[@]}" ;;
    lsj)   echo "${OFF[@]} INPUT.LSJ.ENABLED True" ;;
    color) echo "${OFF[@]} INPUT.COLOR_JITTER.ENABLED True" ;;
    crop)  echo "${OFF[@]} INPUT.CROP.ENABLED True" ;;
    ema)   echo "${OFF[@]} MODEL.EMA.ENABLED True" ;;
    full)  echo "" ;;
    fp32|bf16) echo "MODEL.PRECISION $1" ;;
    *) echo "unknown variant $1 (baseline lsj color crop ema full fp32 bf16)" >&2; exit 2 ;;
  esac
}

dataset_opts() {  # the tune split of one dataset, evaluated on tune_val and tune_train
  case $1 in
    bccd) root=$S/bccd/JPEGImages; classes=3 ;;
    raccoon) root=$S/raccoon/images; classes=1 ;;
    *) echo "unknown dataset $1 (bccd raccoon)" >&2; exit 2 ;;
  esac
  echo "DATASETS.COCO_FORMAT [['tune_train','$C/${1}_tune_train.json','$root'],['tune_val','$C/${1}_tune_val.json','$root']]"
  echo "DATASETS.TRAIN ('tune_train',) DATASETS.TEST ('tune_val','tune_train')"
  echo "MODEL.RETINANET.NUM_CLASSES $classes"
}

schedule_opts() {  # MAX_ITER n with the config's proportions: LR x0.1 at 75 % and 94 %, 8 % warm-up
  local n=$1
  echo "SOLVER.MAX_ITER $n SOLVER.STEPS ($((n * 3 / 4)),$((n * 15 / 16))) SOLVER.WARMUP_ITERS $((n / 12))"
}

run() {  # run DIR opts...: one training unless DIR already holds its result
  local dir=$1; shift
  if [[ -f $dir/metrics_final.json ]]; then echo "done already: $dir"; return; fi
  mkdir -p "$dir"
  echo "$(date +%T) training $dir (load $(cut -d' ' -f1-3 /proc/loadavg))"
  nice -n 19 "$PY" tools/train_net.py --config-file "$CONFIG" "$@" OUTPUT_DIR "$dir" \
      > "$dir/stdout.log" 2>&1 || { echo "FAILED: $dir (see $dir/stdout.log)"; return; }
  grep -h "Overall training speed" "$dir/log.txt" | tail -1 | sed "s|^|  |"
}

# Reads the opts lines of dataset_opts as "KEY VALUE" pairs (a value has no spaces).
as_args() { local line; while read -r line; do [[ -n $line ]] && printf '%s\n' $line; done; }

for d in $DATASETS; do
  mapfile -t data < <(dataset_opts "$d" | as_args)
  if [[ -n ${SCHEDULE:-} ]]; then  # the schedule sweep: the full recipe at several lengths
    for n in ${SCHEDULE_ITERS:-1200 1800 2400}; do
      for seed in $SEEDS; do
        mapfile -t sched < <(schedule_opts "$n" | as_args)
        run "$OUT/schedule/$d/it$n/seed$seed" "${data[@]}" "${sched[@]}" SEED "$seed"
      done
    done
    continue
  fi
  sched=()
  [[ -n $ITERS ]] && mapfile -t sched < <(schedule_opts "$ITERS" | as_args)
  for v in $VARIANTS; do
    read -r -a pieces <<< "$(variant_opts "$v")"
    for seed in $SEEDS; do
      run "$OUT/$d/$v/seed$seed" "${data[@]}" "${pieces[@]}" "${sched[@]}" SEED "$seed"
    done
  done
done
