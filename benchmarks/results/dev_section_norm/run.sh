#!/usr/bin/env bash
# Development run of docs/design.md's tenth round (not adopted then): each section's image features standardised
# over its own spots. The tenth round ran it with section_norm.patch (beside this file, kept as it was run) applied
# to commit 7f1f9a6; since the fifteenth round the setting is built in (ModelConfig.section_norm, an option), so no
# patch is needed. The networks are trained in the run (about 9 minutes per dataset on the 2-core development
# machine). Compare the phg2st_adaptive rows with benchmarks/results/her2st_c_random_epyc, mob_random_epyc and
# mob_random_epyc_raw (rows.csv here).
#   PHG2ST_DATA_DIR=../shared/data bash benchmarks/results/dev_section_norm/run.sh OUT
set -euo pipefail
out=${1:?results folder}
common=(--folds leave_one_section_out --methods phg2st_adaptive phg2st_adaptive_network --fractions 0.1 0.2
        --seeds 0 1 2 --hidden 128 --max-epochs 100 --fit section_norm=true --cache-dir "$out/tiles")
.venv/bin/phg2st benchmark her2st --sections C2 C3 C4 C5 C6 "${common[@]}" \
    --model-cache "$out/models_her2st" --out "$out/her2st"
.venv/bin/phg2st benchmark stutility_mob --mpp 0.9 "${common[@]}" \
    --model-cache "$out/models_mob" --out "$out/mob"
