#!/usr/bin/env bash
# The GPU measurements of issue 17 in one run, on a machine with a CUDA GPU, PyTorch, timm, Lightning and
# torch-geometric (the package itself from src/). Prepare the her2st C2 data here first:
#     PHG2ST_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_uni.py prepare .unidata
# then, on the GPU machine, from the repository root (results into $OUT, default gpu_results/):
#     bash benchmarks/gpu_issue17.sh
# 1. UNI's architecture (ViT-L/16, random weights) on C2's tiles through pp.embed_tiles and bare, in bf16;
# 2. the 600,000-bin Visium HD slide end to end (bench_slide.py), training and impute on the GPU;
# 3. impute of 100,000 Visium HD bins (bench_scale.py, the CPU table's stage) on the GPU;
# 4. one training epoch on 10,000 Visium HD bins on the GPU;
# 5. step 1 in fp32.
# The most wanted first: a run stopped at a time limit keeps what finished.
set -u
out=${OUT:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch, os; print('torch', torch.__version__, 'cpus', os.cpu_count())" | tee -a "$out/gpu.txt"
"$py" -c "import anndata, timm, torch_geometric, lightning, phg2st_sc; print(anndata.__version__, timm.__version__, torch_geometric.__version__, lightning.__version__)" || exit 1
"$py" benchmarks/bench_uni.py run .unidata --device cuda --precision bf16 --out "$out/uni_bf16.json"
"$py" benchmarks/bench_slide.py --device cuda --no-zarr --out "$out/slide_600k.json" 2>&1 | tee "$out/slide_600k.log"
"$py" benchmarks/bench_scale.py --stage impute --n 100000 --layout visium_hd --accelerator gpu 2>&1 | tee "$out/impute_100k.txt"
"$py" benchmarks/bench_scale.py --stage epoch --n 10000 --layout visium_hd --accelerator gpu 2>&1 | tee "$out/epoch_10k.txt"
"$py" benchmarks/bench_uni.py run .unidata --device cuda --precision fp32 --out "$out/uni_fp32.json"
