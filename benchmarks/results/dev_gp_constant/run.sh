# The GP baseline's constant-gene fix (docs/benchmarks.md, "Since the final runs: the GP baseline"): the GP rows of
# every prompt strategy and fraction the recorded tables use, made again with the fixed code, beside the mean of the
# prompts (its rows show whether a draw is the recorded one). compare.py then matches them, draw by draw, with every
# recorded results folder that has GP rows. tiles_her2st, tiles_mob: tile caches (the features design embeds).
# Run from the repository root; about 45 minutes on the development machine (2 cores, beside other work).
set -euo pipefail
OUT=${OUT:-rows}
run() {  # dataset name, spec strategy:fractions, extra arguments
  local ds=$1 spec=$2; shift 2
  local data=$([ $ds = her2st ] && echo "her2st --sections C2 C3 C4 C5 C6" || echo "stutility_mob --mpp 0.9")
  PHG2ST_DATA_DIR=../shared/data .venv/bin/python -m phg2st_sc.cli benchmark $data \
      --folds leave_one_section_out --methods mean gp --strategy ${spec%%:*} \
      --fractions $(echo ${spec#*:} | tr , " ") --seeds 0 1 2 --cache-dir tiles_$ds \
      --out $OUT/${ds}_${spec%%:*}_$(echo ${spec#*:} | tr -d .,) "$@"
}
for spec in random:0.05,0.07,0.1,0.2,0.3 blocks:0.1 space:0.05,0.07,0.1,0.2 variance:0.05,0.07,0.1,0.2 \
    features:0.05,0.1,0.2 space_blocks:0.1 variance_blocks:0.1 features_blocks:0.1; do
  run her2st $spec
done
for spec in random:0.05,0.1,0.2,0.3 blocks:0.1 space:0.05,0.07,0.1,0.2 variance:0.05,0.07,0.1,0.2 \
    space_blocks:0.1 variance_blocks:0.1; do
  run mob $spec
done
# all 30 her2st sections (the leave-one-patient-out table: prompt-only baselines, 10% random prompts)
PHG2ST_DATA_DIR=../shared/data .venv/bin/python -m phg2st_sc.cli benchmark her2st --folds leave_one_patient_out \
    --methods mean gp --seeds 0 1 2 --out $OUT/her2st_lopo
.venv/bin/python benchmarks/results/dev_gp_constant/compare.py $OUT benchmarks/results \
    --out benchmarks/results/dev_gp_constant
