#!/usr/bin/env bash
# Unsupervised en<->fr on Multi30k, end to end, with the fairseq CLI and --user-dir fairseq_smallcap:
#   prepare (unsupervised split, joint sentencepiece) -> skip-gram subword embeddings of both
#   languages (smallcap-embeddings, --init-embeddings) -> MASS pretraining -> DAE + online BT
#   fine-tuning -> fairseq-generate on test_2016_flickr both ways -> sacreBLEU, chrF, the share
#   of distinct outputs, examples.  This is the recipe "mass-fixed+emb128+shared" of
#   benchmarks/README.md (shared encoder/decoder/output embeddings), on a time budget, at lr 0.002.
#
# usage: examples/multi30k/demo.sh [--minutes M] [--arch ARCH] [--raw-dir DIR] [--work DIR]
#                                   [--seed N] [--beam N] [--mass-share F] [--lr R] [--extra FLAGS]
#                                   [--finetune-extra FLAGS]
#                                   [--results-log FILE [--paired-with WORK2]]
#   --minutes   training wall-clock budget, split --mass-share MASS / the rest DAE+BT (default
#               14: the whole demo then takes under 20 minutes on 2 CPU cores); raise it to train longer
#   --arch      smallcap_very_small (default), smallcap_small, smallcap_medium, smallcap_large
#   --raw-dir   the Multi30k raw files (default: ../shared/data/multi30k)
#   --work      output directory (default: runs/demo); re-running resumes where it stopped
#   --seed      training seed of both stages (default 1)
#   --beam      beam size of the test translations (default 4; 1 is greedy decoding)
#   --mass-share  the budget's share for MASS pretraining, above 0 and below 1 (default 0.3)
#   --lr        learning rate of both stages (default 0.002; the demo section of benchmarks/README.md
#               compares it with 0.001, three seeds each at 14 and at 86 minutes)
#   --extra     extra fairseq-train flags for both stages, after the recipe's (so --lr, --warmup-updates
#               or --lambda-dae given here replace its own), e.g. --extra "--amp"
#   --finetune-extra  extra fairseq-train flags for the DAE + back-translation stage only, after
#               --extra's, e.g. --finetune-extra "--lambda-dae 0:1,400:0" (the rate of both stages:
#               --lr)
#   --results-log  append the run's figures (benchmarks/demo_record.py) to this JSON-lines ledger,
#               e.g. benchmarks/results/demo.jsonl
#   --paired-with  another finished demo's --work, the same --seed and test set with another setting
#               (e.g. another --lr): the record also holds sacreBLEU's paired bootstrap
#               (--paired-bs) of this demo's test translations against WORK2's; needs --results-log.
#               Two demos run side by side: re-run the second with it (it decodes both directions
#               again, a minute or two, and records again: a "decoding only" row)
# A finished stage is not run again: re-running a finished demo with another --beam only decodes
# its checkpoint again (its outputs, WORK/test.*, replace the earlier decoding's). A --work directory
# trained with other --arch/--minutes/--seed/--mass-share/--lr/--raw-dir/--extra/--finetune-extra
# (WORK/settings) is refused.
set -euo pipefail
MINUTES=14; ARCH=smallcap_very_small; RAW=""; WORK=runs/demo; LR=0.002; EXTRA=""; FT_EXTRA=""; LOG=""; PAIRED=""; SEED=1; BEAM=4; MASS_SHARE=0.3
ARGS=$(printf '%q ' "$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2;;
    --arch) ARCH="$2"; shift 2;;
    --raw-dir) RAW="$2"; shift 2;;
    --work) WORK="$2"; shift 2;;
    --seed) SEED="$2"; shift 2;;
    --beam) BEAM="$2"; shift 2;;
    --mass-share) MASS_SHARE="$2"; shift 2;;
    --lr) LR="$2"; shift 2;;
    --extra) EXTRA="$2"; shift 2;;
    --finetune-extra) FT_EXTRA="$2"; shift 2;;
    --results-log) LOG="$2"; shift 2;;
    --paired-with) PAIRED="$2"; shift 2;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0;;
    *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2;;
  esac
done
[[ "$MINUTES" =~ ^[0-9]*\.?[0-9]+$ && "$MINUTES" =~ [1-9] ]] || {
  echo "demo.sh: --minutes $MINUTES: expected a number of minutes above 0" >&2; exit 2; }
[ -z "$PAIRED" ] || [ -n "$LOG" ] || {
  echo "demo.sh: --paired-with $PAIRED: the paired bootstrap is recorded in --results-log's ledger: give one" >&2; exit 2; }
if [ -n "$PAIRED" ]; then
  for f in test.en-fr.hyp test.fr-en.hyp bt/checkpoint_best.pt; do [ -s "$PAIRED/$f" ] || {
    echo "demo.sh: --paired-with $PAIRED: no $PAIRED/$f there: give a finished demo's --work" >&2; exit 2; }; done
  [ "$(realpath -m "$PAIRED")" != "$(realpath -m "$WORK")" ] || {
    echo "demo.sh: --paired-with $PAIRED: that is --work itself: give another demo's --work" >&2; exit 2; }
fi
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "demo.sh: --seed $SEED: expected a whole number" >&2; exit 2; }
# (a paired bootstrap compares two settings on one seed: WORK2's settings name its seed)
[ -z "$PAIRED" ] || [[ " $(cat "$PAIRED/settings" 2>/dev/null) " == *" seed=$SEED "* ]] || {
  echo "demo.sh: --paired-with $PAIRED: not trained with --seed $SEED ($PAIRED/settings: '$(cat "$PAIRED/settings" 2>/dev/null)')" >&2; exit 2; }
[[ "$BEAM" =~ ^[1-9][0-9]*$ ]] || { echo "demo.sh: --beam $BEAM: expected a whole number above 0" >&2; exit 2; }
[[ "$MASS_SHARE" =~ ^0?\.[0-9]*[1-9][0-9]*$ ]] || {
  echo "demo.sh: --mass-share $MASS_SHARE: expected a number above 0 and below 1, like 0.3" >&2; exit 2; }
MASS_SHARE=$(python -c "print(float('$MASS_SHARE'))")  # one spelling (.3, 0.30: 0.3) for WORK/settings
[[ "$LR" =~ ^[0-9]*\.?[0-9]+([eE]-?[0-9]+)?$ ]] && python -c "import sys; sys.exit(not float('$LR') > 0)" || {
  echo "demo.sh: --lr $LR: expected a learning rate above 0, like 0.002" >&2; exit 2; }
LR=$(python -c "print(float('$LR'))")  # (1e-3, 0.0010: 0.001)
# the embedding width of --arch (Table 1; nothing for an arch not in it), then the table's archs
# (stderr dropped: fairseq's import-time notices would follow a one-line error)
DIM=$(ARCH="$ARCH" python -c "import os; from fairseq_smallcap.models.smallcap_transformer import TABLE1_SIZES as t; \
print(t.get(os.environ['ARCH'], {}).get('dim', ''), ' '.join(t))" 2>/dev/null) || {
  echo "demo.sh: cannot import fairseq_smallcap.models with $(command -v python): install the plugin (make install)" >&2; exit 2; }
[[ "$DIM" =~ ^[0-9]+\  ]] || { echo "demo.sh: --arch $ARCH: expected one of${DIM}" >&2; exit 2; }
DIM=${DIM%% *}
gives() { [[ " $1 " == *" $2 "* || " $1 " == *" $2="* ]]; }  # (does the flag string $1 give flag $2?)
! gives "$EXTRA" --seed || {
  echo "demo.sh: --extra '$EXTRA': give the seed with --seed, not inside --extra" >&2; exit 2; }
! gives "$FT_EXTRA" --seed || {
  echo "demo.sh: --finetune-extra '$FT_EXTRA': give the seed with --seed, not inside --finetune-extra" >&2; exit 2; }
# (one rate for both stages, as the records and their comparisons read it)
! gives "$FT_EXTRA" --lr || {
  echo "demo.sh: --finetune-extra '$FT_EXTRA': give the learning rate of both stages with --lr" >&2; exit 2; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RECIPE=mass-fixed+emb128+shared  # (benchmarks/README.md's name; --extra flags come on top)
USER_DIR="$ROOT/fairseq_smallcap"
DATA="$WORK/data"
HOURS_MASS=$(python -c "print(round($MINUTES * $MASS_SHARE / 60, 4))")
HOURS_ALL=$(python -c "print(round($MINUTES / 60, 4))")
# (fairseq reads --stop-time-hours 0 as no limit: a share that rounds MASS's time to 0, or to the whole budget, is refused)
python -c "import sys; sys.exit(not 0 < $HOURS_MASS < $HOURS_ALL)" || {
  echo "demo.sh: --mass-share $MASS_SHARE of --minutes $MINUTES gives MASS $HOURS_MASS h of $HOURS_ALL h: give a share that leaves both stages time" >&2
  exit 2; }
# Validation (sacreBLEU both ways, ~30 s on 2 cores) every 200 updates and at the end, not at the
# end of every epoch: under 30 minutes the fine-tuning stage has ~230 updates, and four validations
# took a fifth of it.
VALIDATE_EVERY=200
# Fine-tuning warm-up: under 30 minutes the stage has only about 200 updates (215 in 14 minutes),
# and 200 warm-up updates would leave all of it in warm-up (benchmarks/README.md, demo section:
# the records before and after this default, same seed and budget).
FT_WARMUP=$(python -c "print(50 if $MINUTES < 30 else 200)")
START=$(date +%s)
RESUMED=""; [ -e "$WORK/mass" ] && RESUMED=--resumed
DECODED_ONLY=""; [ -e "$WORK/mass.finished" ] && [ -e "$WORK/bt.finished" ] && DECODED_ONLY=--decoded-only
# The training settings of this --work directory (written when training begins): a re-run with
# others would mix two trainings, or decode a checkpoint with another data directory.
# (settings written before the learning rate was written ran at 0.001, those written
# before --mass-share existed at 0.3, those before --finetune-extra without one)
SETTINGS="arch=$ARCH minutes=$MINUTES seed=$SEED raw=$RAW extra=$EXTRA lr=$LR mass_share=$MASS_SHARE finetune_extra=$FT_EXTRA"
if [ -e "$WORK/settings" ]; then
  OLD="$(cat "$WORK/settings")"; [[ "$OLD" == *" lr="* ]] || OLD="$OLD lr=0.001"
  [[ "$OLD" == *" mass_share="* ]] || OLD="$OLD mass_share=0.3"
  [[ "$OLD" == *" finetune_extra="* ]] || OLD="$OLD finetune_extra="
  [ "$OLD" == "$SETTINGS" ] || {
    echo "demo.sh: --work $WORK was trained with '$OLD', not '$SETTINGS': give those or another --work" >&2
    exit 2; }
elif [ -e "$WORK/mass" ]; then
  echo "demo.sh: --work $WORK holds training from before demo.sh recorded its settings: write those it ran with to $WORK/settings (these would be '$SETTINGS') or use another --work" >&2
  exit 2
fi
step() { echo; echo "=== [$(( ($(date +%s) - START) / 60 )) min] $*"; }

step "1/5 prepare Multi30k (English: train lines 1-14,500; French: lines 14,501-29,000)"
smallcap-prepare --multi30k ${RAW:+--raw-dir "$RAW"} --dest "$DATA" --vocab-size 8000
for l in en fr; do  # (the paired bootstrap needs one test set: before any training)
  [ -z "$PAIRED" ] || cmp -s "$DATA/raw/test.$l" "$PAIRED/data/raw/test.$l" || {
    echo "demo.sh: --paired-with $PAIRED: its test set $PAIRED/data/raw/test.$l differs from $DATA/raw/test.$l" >&2; exit 2; }
done

step "2/5 skip-gram subword embeddings of both languages (d=$DIM)"
[ -s "$WORK/emb$DIM.vec" ] || smallcap-embeddings "$DATA" --dim "$DIM" --threads 1 --out "$WORK/emb$DIM.vec"

COMMON=(--user-dir "$USER_DIR" --task unsupervised_translation --arch "$ARCH"
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1
  --optimizer adam --adam-betas "(0.9,0.98)" --lr "$LR" --lr-scheduler inverse_sqrt
  --clip-norm 1.0 --max-tokens 2000 --max-update 1000000 --cpu
  --log-format simple --log-interval 25 --seed "$SEED" --num-workers 1 --init-embeddings "$WORK/emb$DIM.vec"
  --share-all-embeddings)

step "3/5 MASS pretraining (${HOURS_MASS} h)"
[ -e "$WORK/settings" ] || echo "$SETTINGS" > "$WORK/settings"
if [ -e "$WORK/mass.finished" ]; then echo "finished before ($WORK/mass.finished)"; else
  fairseq-train "$DATA" "${COMMON[@]}" --warmup-updates 200 --lambda-mass 1 --lambda-dae 0 --lambda-bt 0 $EXTRA \
    --stop-time-hours "$HOURS_MASS" --save-dir "$WORK/mass" --no-epoch-checkpoints \
    --save-interval-updates 200 --keep-interval-updates 1 --disable-validation
  touch "$WORK/mass.finished"
fi

step "4/5 DAE + online back-translation from the MASS checkpoint (until ${HOURS_ALL} h in all)"
if [ -e "$WORK/bt.finished" ]; then echo "finished before ($WORK/bt.finished)"; else
  fairseq-train "$DATA" "${COMMON[@]}" --warmup-updates "$FT_WARMUP" --lambda-mass 0 --lambda-dae "0:1,2000:0.1" --lambda-bt 1 $EXTRA $FT_EXTRA \
    --finetune-from-model "$WORK/mass/checkpoint_last.pt" \
    --stop-time-hours "$HOURS_ALL" --save-dir "$WORK/bt" --no-epoch-checkpoints \
    --validate-interval 1000000 --validate-interval-updates "$VALIDATE_EVERY" --save-interval-updates "$VALIDATE_EVERY" \
    --keep-interval-updates 1 --eval-bleu --best-checkpoint-metric bleu --maximize-best-checkpoint-metric
  touch "$WORK/bt.finished"
fi

step "5/5 translate test_2016_flickr both ways and score with sacreBLEU"
for pair in en-fr fr-en; do
  src=${pair%-*}; tgt=${pair#*-}
  fairseq-generate "$DATA" --user-dir "$USER_DIR" --task unsupervised_translation -s "$src" -t "$tgt" \
    --gen-subset test --path "$WORK/bt/checkpoint_best.pt" --beam "$BEAM" --max-len-a 1.3 --max-len-b 5 \
    --batch-size 128 --cpu --post-process sentencepiece > "$WORK/generate.test.$pair.log"
  grep '^D-' "$WORK/generate.test.$pair.log" | sort -t- -k2,2n | cut -f3 > "$WORK/test.$pair.hyp"
  echo "--- $src -> $tgt"
  sacrebleu "$DATA/raw/test.$tgt" -i "$WORK/test.$pair.hyp" -m bleu chrf -w 2 --format text | tee "$WORK/test.$pair.bleu"
  echo "distinct outputs: $(sort -u "$WORK/test.$pair.hyp" | wc -l) of $(wc -l < "$WORK/test.$pair.hyp")" | tee -a "$WORK/test.$pair.bleu"
  # awk reads to the end (no SIGPIPE under pipefail) and prints the first three examples
  paste "$DATA/raw/test.$src" "$WORK/test.$pair.hyp" "$DATA/raw/test.$tgt" | \
    awk -F'\t' 'NR <= 3 {print "  src: " $1 "\n  hyp: " $2 "\n  ref: " $3 "\n"}'
done
step "done in $(( ($(date +%s) - START) / 60 )) min; outputs in $WORK"
for pair in en-fr fr-en; do echo "test_2016_flickr $pair:"; sed 's/^/  /' "$WORK/test.$pair.bleu"; done
[ -z "$LOG" ] || python "$ROOT/benchmarks/demo_record.py" --work "$WORK" --arch "$ARCH" --recipe "$RECIPE" --minutes "$MINUTES" \
  --seed "$SEED" --beam "$BEAM" --lr "$LR" --mass-share "$MASS_SHARE" --extra="$EXTRA" --finetune-extra="$FT_EXTRA" --wall-s $(( $(date +%s) - START )) $RESUMED $DECODED_ONLY ${PAIRED:+--paired-with "$PAIRED"} --command "examples/multi30k/demo.sh ${ARGS% }" --results-log "$LOG"
