#!/usr/bin/env bash
# Issue #3's next GPU run: more paired seeds of full fine-tuning and both target candidates in one device
# call. Both targets are decided by the plan registered in bench/plans/methods-confirm.json: seeds from 63
# up, read only at its looks (13, 26, 39, 52, 65 complete seeds) with its critical values
# (docs/benchmarks.md, "A registered plan for the verdict"). On this 2-core CPU one seed of the three tasks
# costs about 19 min per configuration (40-60 on a slow EPYC). On an H200, one call with a 455 s deadline
# ran 122 trainings, 15 at a time: about 13 seeds of these 3 configurations.
#
#   python bench/methods.py prepare --carry .bench-carry          # here, once (fp16 base + data, git-ignored)
#   python bench/methods.py verdict                               # says the next seed no run has started
#   bash bench/gpu_seeds.sh 64 76 455                            # on the device machine, carrying .bench-carry;
#                                                                # writes $OUT/gpu-seeds-64-76.json
#   cp <that file> bench/results/confirm/ && python bench/methods.py verdict
#
# Start at the first seed with no run at all: a seed is one draw and the verdict refuses a seed run twice.
# A seed the deadline cut in part must be finished on the same kind of device (a pair shares one device)
# before any later seed counts; `verdict` names what it lacks.
# The deadline stops new jobs, and seeds run in order, so it cuts whole seeds off the end. Each
# configuration trains at the lrs its CPU seeds used (full: 1e-4 / 1e-4 / 5e-5; the dropout-0.3 hybrid:
# 1e-3 / 5e-4 / 3e-3; the skip-1 candidate: 1e-3 / 5e-4 / 5e-4, for SST-2 / CoLA / SUBJ). A seed fixes the
# initial weights and the data order on any device. Dropout masks come from the device's own generator,
# so GPU seeds are new draws, paired with full fine-tuning on the same device.
# DEVICE, WORKERS and any further arguments (e.g. `--max-steps 2 --tasks cola` for a smoke run) are
# passed through.
set -euo pipefail
first=${1:?first seed}
last=${2:?last seed}
deadline=${3:-455}
shift $(( $# < 3 ? $# : 3 ))
cand1=houlsby11_ffnlora_ldrop3
cand2=houlsby11_ffnlora20_skip1_attnodrop
lrs="full.sst2=1e-4,full.cola=1e-4,full.subj=5e-5"
lrs+=",$cand1.sst2=1e-3,$cand1.cola=5e-4,$cand1.subj=3e-3"
lrs+=",$cand2.sst2=1e-3,$cand2.cola=5e-4,$cand2.subj=5e-4"
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/methods.py accuracy --carry .bench-carry --base-out /tmp/minilm-fp32 \
    --device "${DEVICE:-cuda}" --workers "${WORKERS:-15}" --configs "full,$cand1,$cand2" \
    --seeds "$(seq -s, "$first" "$last")" --task-lr "$lrs" --predictions --deadline-s "$deadline" \
    --out "${OUT:-.}/gpu-seeds-$first-$last.json" "$@"
