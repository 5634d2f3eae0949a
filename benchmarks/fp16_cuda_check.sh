#!/usr/bin/env bash
# fp16 on CUDA, end to end (needs a GPU; CI has none, so this is a script, not a test):
# MASS + denoising + online back-translation together for 60 updates with --fp16 and sacreBLEU
# validation, a resume from checkpoint_last.pt to update 80, then fairseq-generate --fp16 both ways.
#   bash benchmarks/fp16_cuda_check.sh DATA OUT     (DATA: smallcap-prepare's output, e.g. Multi30k)
# Any step that fails makes the script fail; the logs are in OUT. DEVICE_FLAGS (default --fp16)
# replaces --fp16 everywhere: DEVICE_FLAGS=--cpu runs the same steps on a CPU (a check of the script).
set -euo pipefail
DATA=${1:?usage: fp16_cuda_check.sh DATA OUT}; OUT=${2:?usage: fp16_cuda_check.sh DATA OUT}
[ ! -e "$OUT/ckpt" ] || { echo "$OUT/ckpt exists (a run would resume from it): give a new OUT" >&2; exit 2; }
mkdir -p "$OUT"
trap 'echo "failed (exit $?): see the logs in $OUT" >&2' ERR
read -r -a DEVICE <<< "${DEVICE_FLAGS:---fp16}"
USER_DIR=$(cd "$(dirname "$0")/.." && pwd)/fairseq_smallcap
FLAGS=(--user-dir "$USER_DIR" --task unsupervised_translation --arch smallcap_very_small "${DEVICE[@]}"
       --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --optimizer adam --adam-betas "(0.9,0.98)"
       --lr 0.001 --lr-scheduler inverse_sqrt --warmup-updates 50 --max-tokens 2000 --seed 1 --log-format json
       --log-interval 10 --num-workers 1 --save-dir "$OUT/ckpt" --lambda-mass 1 --lambda-dae 1 --lambda-bt 1
       --eval-bleu --validate-interval-updates 60 --validate-interval 1000000 --save-interval-updates 60
       --no-epoch-checkpoints)
fairseq-train "$DATA" "${FLAGS[@]}" --max-update 60 > "$OUT/train.log" 2>&1
fairseq-train "$DATA" "${FLAGS[@]}" --max-update 80 >> "$OUT/train.log" 2>&1  # resumes from update 60
grep -q "Loaded checkpoint .*(epoch [0-9]* @ 60 updates)" "$OUT/train.log" || { echo "no resume from update 60: see $OUT/train.log" >&2; exit 1; }
for pair in en-fr fr-en; do
  fairseq-generate "$DATA" --user-dir "$USER_DIR" --task unsupervised_translation -s "${pair%-*}" -t "${pair#*-}" \
    --gen-subset test --path "$OUT/ckpt/checkpoint_last.pt" "${DEVICE[@]}" --beam 4 --batch-size 128 \
    --post-process sentencepiece --scoring sacrebleu > "$OUT/generate.$pair.log" 2>&1
  grep -h "Translated\|BLEU" "$OUT/generate.$pair.log"
done
grep -h '| valid |' "$OUT/train.log" | grep -o '"valid_num_updates": "[0-9]*"\|"valid_bleu": "[0-9.]*"' | paste - -
echo "${DEVICE[*]}: trained, validated, resumed and generated (logs in $OUT)"
