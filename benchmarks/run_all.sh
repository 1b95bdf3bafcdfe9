#!/usr/bin/env bash
# Every benchmark, one after the other, each printing its table (minutes to an hour on 2 cores:
# the native-conv ResNet50 step alone takes about a minute). Not tests: run on an idle machine
# and quote the tables with the machine they came from (README, "Speed on CPU").
#   bench_conv.py           ResNet50 train step at 224 px: native Conv2D vs im2col, GFLOP/s
#                           next to the best matmul's (the roofline), and PyTorch eager
#                           alternating with it when $PACKRUN_TORCH_PYTHON names an
#                           interpreter with torch (benchmarks/TORCH_REFERENCE.md)
#   bench_fixed_feature.py  fixed_feature 20 epochs with feature_cache off / augmented / eval;
#                           input pipeline images/s next to a training step's consumption
#   bench_launch.py         packrun run vs bare msrun; 1 vs 2 workers
#   bench_ls.py             packrun ls over 1,000 run directories; one squeue call vs one per run
#   bench_orphans.py        kill -9 of each launcher: seconds until nothing it started runs
#   chaos.py                N chaos trials of a 2-worker run (a table; not in this loop: minutes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for bench in bench_conv.py bench_fixed_feature.py bench_launch.py bench_ls.py bench_orphans.py; do
    echo "=== benchmarks/$bench"
    python3 "benchmarks/$bench"
done
