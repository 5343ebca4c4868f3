#!/usr/bin/env bash
# Development run of docs/design.md's thirteenth round: the prompts' kriging inside the network's prompt field, in
# training and when predicting (ModelConfig.kriged_field, an option since this round); the networks are trained in
# the run (about 75 minutes per dataset on the 2-core development machine, the two datasets side by side, one
# thread each). Then compare.py OUT prints the table and the rule's verdict (RULE.md) against the recorded rows
# without it.
#   PHG2ST_DATA_DIR=../shared/data bash benchmarks/results/dev_kriged_field/run.sh OUT her2st   # and OUT mob
#   .venv/bin/python benchmarks/results/dev_kriged_field/compare.py OUT
set -euo pipefail
out=${1:?results folder}; ds=${2:?her2st or mob}
common=(--folds leave_one_section_out --methods phg2st_adaptive phg2st_adaptive_network --fractions 0.1 0.2
        --seeds 0 1 2 --hidden 128 --max-epochs 100 --fit kriged_field=true --cache-dir "$out/tiles")
if [ "$ds" = her2st ]; then
  .venv/bin/phg2st benchmark her2st --sections C2 C3 C4 C5 C6 "${common[@]}" \
      --model-cache "$out/models_her2st" --out "$out/her2st"
else
  .venv/bin/phg2st benchmark stutility_mob --mpp 0.9 "${common[@]}" \
      --model-cache "$out/models_mob" --out "$out/mob"
fi
