# The constant-gene fix (docs/benchmarks.md, "Since the final runs"): the adaptive rows before and after, and how
# often the prompt field's kernel moved. BEFORE and AFTER: checkouts of the commit before the fix and of the fix;
# models_her2st, models_mob: the --model-cache folders of the final runs; tiles_her2st, tiles_mob: tile caches.
# Run from the repository root.
set -euo pipefail
: "${BEFORE:?a checkout of the commit before the fix}" "${AFTER:?a checkout of the fix}"
for code in before after; do   # the adaptive variant alone on the cached networks: only the layer runs
  src=$([ $code = before ] && echo $BEFORE || echo $AFTER)/src
  for ds in her2st mob; do
    data=$([ $ds = her2st ] && echo "her2st --sections C2 C3 C4 C5 C6" || echo "stutility_mob --mpp 0.9")
    for spec in random:0.05,0.07,0.1,0.2,0.3 blocks:0.1 space:0.05,0.07,0.1,0.2 variance:0.05,0.07,0.1,0.2 \
        features:0.05,0.07,0.1,0.2 space_blocks:0.1 variance_blocks:0.1 features_blocks:0.1; do
      PYTHONPATH=$src PHG2ST_DATA_DIR=../shared/data .venv/bin/python -m phg2st_sc.cli benchmark $data \
          --folds leave_one_section_out --methods phg2st_adaptive --strategy ${spec%%:*} \
          --fractions $(echo ${spec#*:} | tr , " ") --seeds 0 1 2 --hidden 128 --max-epochs 100 \
          --model-cache models_$ds --cache-dir tiles_$ds --out rows/$code/${ds}_${spec%%:*}
    done
  done
done
.venv/bin/python benchmarks/results/dev_constant_genes/compare.py rows/before rows/after
for ds in her2st mob; do
  PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/results/dev_constant_genes/check_kernels.py $ds \
      --embedding-cache tiles_$ds --out benchmarks/results/dev_constant_genes/kernels_$ds.csv
done
