#!/usr/bin/env bash
# The main job on a fresh machine: install, then the degradation experiment on real
# Fashion-MNIST (plain vs residual, depths 8/20/56; about 10 minutes on 2 CPU cores),
# its figures and its table. Results go to results/my_quick_fashion/ (OUT=... to change);
# the reference run of the same command is committed in results/quick_fashion/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
OUT=${OUT:-results/my_quick_fashion}
.venv/bin/resexp sweep experiment=quick_fashion --out "$OUT"
.venv/bin/resexp plot "$OUT"
.venv/bin/resexp report "$OUT"
echo "figure: $OUT/figures/depth.png (and curves.png)"
