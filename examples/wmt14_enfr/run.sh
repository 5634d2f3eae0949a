#!/usr/bin/env bash
# The Table 2 setting: unsupervised en<->fr on News Crawl with the study's BPE codes and
# vocabularies, one Table 1 size, MASS baseline or curated, evaluated on newstest2013 (valid) and
# newstest2014 (test) next to Table 2's numbers. Meant for GPUs; every stage resumes.
#
# usage: examples/wmt14_enfr/run.sh --news-en FILE --news-fr FILE [--arch ARCH] [--system S]
#          [--work DIR] [--wmt-dir DIR] [--mass-updates N] [--updates N] [--max-tokens N]
#          [--eval-lines N] [--extra "FLAGS"]
#   --news-en/--news-fr  raw News Crawl text, one sentence a line (supplied by you; MASS used
#                        News Crawl 2007-2017, ~190M sentences per language). Different
#                        sentences for each language: never aligned pairs.
#   --arch      smallcap_very_small (default), smallcap_small, smallcap_medium, smallcap_large;
#               the BPE vocabulary follows Table 1 (55k for very small/medium, 65k for small/large)
#   --system    baseline (MASS, then DAE + BT; default) or curated (static curation of the
#               corpora, online BT-pair filtering, rarity curriculum, one back-parallel round)
#   --wmt-dir   the study's codes/vocabularies and newstest files (default ../shared/data/wmt14-enfr)
#   --mass-updates, --updates   MASS pretraining and DAE + BT fine-tuning updates (default 100000 each)
#   --eval-lines  score only the first N lines of newstest2013/2014 (smoke tests; default all)
#   --extra     more fairseq-train flags for both stages, e.g. "--fp16 --update-freq 2"
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
NEWS_EN=""; NEWS_FR=""; ARCH=smallcap_very_small; SYSTEM=baseline; WORK=runs/wmt14; WMT="$ROOT/../shared/data/wmt14-enfr"
MASS_UPDATES=100000; UPDATES=100000; MAX_TOKENS=4000; EVAL_LINES=0; EXTRA=""
while [ $# -gt 0 ]; do
  case "$1" in
    --news-en) NEWS_EN="$2"; shift 2;; --news-fr) NEWS_FR="$2"; shift 2;;
    --arch) ARCH="$2"; shift 2;; --system) SYSTEM="$2"; shift 2;; --work) WORK="$2"; shift 2;;
    --wmt-dir) WMT="$2"; shift 2;; --mass-updates) MASS_UPDATES="$2"; shift 2;;
    --updates) UPDATES="$2"; shift 2;; --max-tokens) MAX_TOKENS="$2"; shift 2;;
    --eval-lines) EVAL_LINES="$2"; shift 2;; --extra) EXTRA="$2"; shift 2;;
    -h|--help) sed -n 2,22p "$0"; exit 0;;
    *) echo "run.sh: error: unknown argument $1 (see --help)" >&2; exit 2;;
  esac
done
die() { echo "run.sh: error: $*" >&2; exit 2; }
[ -n "$NEWS_EN" ] && [ -f "$NEWS_EN" ] || die "--news-en ${NEWS_EN:-(missing)}: no such file"
[ -n "$NEWS_FR" ] && [ -f "$NEWS_FR" ] || die "--news-fr ${NEWS_FR:-(missing)}: no such file"
case "$ARCH" in smallcap_very_small|smallcap_medium) BPE=bpe55k;; smallcap_small|smallcap_large) BPE=bpe65k;;
  *) die "--arch $ARCH: not a Table 1 size";; esac
case "$SYSTEM" in baseline|curated) ;; *) die "--system $SYSTEM: baseline or curated";; esac
[ -f "$WMT/$BPE/codes.gz" ] || die "--wmt-dir $WMT: no $BPE/codes.gz"
USER_DIR="$ROOT/fairseq_smallcap"; DATA="$WORK/$BPE-$SYSTEM/data"; RUN="$WORK/$ARCH-$SYSTEM"
mkdir -p "$DATA/raw" "$RUN"
step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }

if [ ! -f "$DATA/dict.txt" ]; then
  step "1/5 data: ${SYSTEM} corpora, Moses + the study's $BPE codes, its vocabulary as dict.txt"
  tmp="$DATA/tmp"; mkdir -p "$tmp"
  for lang in en fr; do
    src=$([ $lang = en ] && echo "$NEWS_EN" || echo "$NEWS_FR")
    if [ "$SYSTEM" = curated ]; then
      smallcap-curate --lang $lang --input "$src" --output "$tmp/train.$lang" \
        --rejects "$DATA/rejects.$lang.tsv" --workers "$(nproc)"
      src="$tmp/train.$lang"
    fi
    python "$ROOT/examples/wmt14_enfr/tokenize_bpe.py" --lang $lang --codes "$WMT/$BPE/codes.gz" \
      --input "$src" --output "$tmp/train.bpe.$lang"
  done
  zcat "$WMT/$BPE/vocab.en-fr.gz" > "$tmp/dict.txt"
  for split in valid test; do for lang in en fr; do
    zcat "$WMT/$BPE/$split.en-fr.$lang.gz" | awk -v n="$EVAL_LINES" 'n == 0 || NR <= n' > "$tmp/$split.en-fr.$lang"
    sed -r 's/(@@ )|(@@ ?$)//g' "$tmp/$split.en-fr.$lang" > "$DATA/raw/$split.$lang"  # tokenized references
  done; done
  for lang in en fr; do
    fairseq-preprocess --only-source --trainpref "$tmp/train.bpe.$lang" --destdir "$DATA/$lang" \
      --srcdict "$tmp/dict.txt" --dataset-impl mmap --workers "$(nproc)"
  done
  fairseq-preprocess --source-lang en --target-lang fr --validpref "$tmp/valid.en-fr" --testpref "$tmp/test.en-fr" \
    --destdir "$DATA" --srcdict "$tmp/dict.txt" --tgtdict "$tmp/dict.txt" --dataset-impl mmap --workers "$(nproc)"
  cp "$tmp/dict.txt" "$DATA/dict.txt"
fi

COMMON=(--user-dir "$USER_DIR" --task unsupervised_translation --arch "$ARCH"
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --optimizer adam --adam-betas "(0.9,0.98)"
  --lr 0.0001 --lr-scheduler inverse_sqrt --warmup-updates 4000 --clip-norm 1.0 --max-tokens "$MAX_TOKENS"
  --seed 1 --log-format simple --log-interval 100 --no-epoch-checkpoints
  --eval-bleu-remove-bpe "@@ " --eval-tokenized-bleu --bt-show-samples-interval 1000)

step "2/5 MASS pretraining ($MASS_UPDATES updates)"
fairseq-train "$DATA" "${COMMON[@]}" $EXTRA --lambda-mass 1 --lambda-dae 0 --lambda-bt 0 \
  --max-update "$MASS_UPDATES" --save-dir "$RUN/mass" --save-interval-updates 5000 --keep-interval-updates 1 \
  --disable-validation

FINETUNE=(--lambda-mass 0 --lambda-dae "0:1,100000:0.1" --lambda-bt 1 --save-dir "$RUN/bt"
  --validate-interval-updates 5000 --save-interval-updates 5000 --keep-interval-updates 1
  --eval-bleu --best-checkpoint-metric bleu --maximize-best-checkpoint-metric)
if [ "$SYSTEM" = curated ]; then
  FINETUNE+=(--bt-filter-scores dual_xent,length_ratio,copy_rate,repeated_ngrams
    --bt-filter-keep "0:1,$((UPDATES / 10 + 1)):1,$((UPDATES / 10 + 2)):0.7"
    --curriculum-by rarity --curriculum-updates $((UPDATES / 2)))
  HALF=$((UPDATES / 2))
  step "3/5 DAE + BT with online curation and curriculum (to update $HALF of $UPDATES)"
  fairseq-train "$DATA" "${COMMON[@]}" $EXTRA "${FINETUNE[@]}" --finetune-from-model "$RUN/mass/checkpoint_last.pt" \
    --max-update "$HALF"
  step "3/5 one round of curated back-parallel data from the update-$HALF model"
  [ -f "$RUN/bp1/summary.json" ] || smallcap-back-parallel "$DATA" --path "$RUN/bt/checkpoint_last.pt" \
    --dest "$RUN/bp1" --keep 0.5 --max-tokens "$MAX_TOKENS"
  step "3/5 DAE + BT + back-parallel (to update $UPDATES)"
  fairseq-train "$DATA" "${COMMON[@]}" $EXTRA "${FINETUNE[@]}" --lambda-bp 1 --back-parallel-data "$RUN/bp1" \
    --max-update "$UPDATES"
else
  step "3/5 DAE + online BT from the MASS checkpoint ($UPDATES updates)"
  fairseq-train "$DATA" "${COMMON[@]}" $EXTRA "${FINETUNE[@]}" --finetune-from-model "$RUN/mass/checkpoint_last.pt" \
    --max-update "$UPDATES"
fi

step "4/5 translate newstest2013 (valid) and newstest2014 (test) both ways"
for split in valid test; do for pair in en-fr fr-en; do
  src=${pair%-*}; tgt=${pair#*-}
  fairseq-generate "$DATA" --user-dir "$USER_DIR" --task unsupervised_translation -s "$src" -t "$tgt" \
    --gen-subset "$split" --path "$RUN/bt/checkpoint_best.pt" --beam 4 --max-len-a 1.3 --max-len-b 5 \
    --batch-size 64 --post-process subword_nmt $(echo "$EXTRA" | grep -o -- "--cpu" || true) > "$RUN/generate.$split.$pair.log"
  grep '^D-' "$RUN/generate.$split.$pair.log" | sort -t- -k2,2n | cut -f3 > "$RUN/$split.$pair.hyp"
  # tokenized BLEU on Moses-tokenized text, as MASS reports it (multi-bleu)
  sacrebleu "$DATA/raw/$split.$tgt" -i "$RUN/$split.$pair.hyp" -m bleu -b -w 2 --tokenize none > "$RUN/$split.$pair.bleu"
done; done

step "5/5 results ($ARCH, $SYSTEM) next to Table 2 (MASS baseline -> proposed method)"
declare -A TABLE2=(
  [smallcap_very_small]="0.97 -> 6.45 | 1.16 -> 7.72 | 1.04 -> 7.00 | 1.31 -> 8.51"
  [smallcap_small]="9.86 -> 14.5 | 8.06 -> 14.0 | 11.5 -> 17.0 | 8.14 -> 16.5"
  [smallcap_medium]="18.15 -> 19.57 | 17.75 -> 18.46 | 20.37 -> 22.95 | 20.33 -> 21.67"
  [smallcap_large]="25 -> 25 | 23 -> 23 | 28 -> 28 | 28 -> 28")
echo "| | newstest2013 en-fr | newstest2013 fr-en | newstest2014 en-fr | newstest2014 fr-en |"
echo "|---|---|---|---|---|"
echo "| this run ($SYSTEM$([ "$EVAL_LINES" -gt 0 ] && echo ", first $EVAL_LINES lines only")) | $(cat "$RUN/valid.en-fr.bleu") | $(cat "$RUN/valid.fr-en.bleu") | $(cat "$RUN/test.en-fr.bleu") | $(cat "$RUN/test.fr-en.bleu") |"
echo "| Table 2 | ${TABLE2[$ARCH]} |"
