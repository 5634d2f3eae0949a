"""smallcap-prepare: raw text -> data layout of fairseq's ``online_backtranslation`` task.

The pipeline is

1. read and check the inputs (plain text or ``.gz``, strict UTF-8, no empty lines in the
   parallel files; empty monolingual lines are an error unless ``--drop-empty``);
2. train ONE joint sentencepiece model (Kudo & Richardson 2018, "SentencePiece: A simple and
   language independent subword tokenizer and detokenizer for Neural Text Processing",
   EMNLP demo) on the monolingual training text of all languages, or reuse ``--spm-model``;
3. encode every file into space-separated pieces and write the joint fairseq ``dict.txt``;
4. binarize with fairseq's own ``fairseq_cli.preprocess`` (run as subprocesses) and check from
   the ``.idx`` files that every kept line became exactly one sentence of the expected length.

The layout written under ``DEST`` (src, tgt = the first two languages, e.g. en, fr)::

    dict.txt                              joint fairseq dictionary (spm pieces except <unk>)
    spm.model, spm.vocab                  the joint sentencepiece model
    {lang}/train.bin, {lang}/train.idx    monolingual training data, one directory per language
    {lang}/dict.txt, {lang}/preprocess.log   written there by fairseq-preprocess
    {lang}/valid.bin, {lang}/valid.idx    held-out monolingual sentences (--heldout-mono), never
                                          trained on: round-trip BLEU model selection
                                          (``--eval-round-trip``, Lample et al. 2018, Sec. 4.4)
    valid.{src}-{tgt}.{src|tgt}.bin/.idx  parallel validation data
    test.{src}-{tgt}.{src|tgt}.bin/.idx   parallel test data (when test files are given)
    dict.{src}.txt, dict.{tgt}.txt        copies of dict.txt written by fairseq-preprocess (they
                                          let the plain ``translation`` task read the same dir)
    preprocess.log                        fairseq-preprocess log of the parallel data
    raw/train.{lang}                      the raw monolingual training text that was used
    raw/valid.{lang}, raw/test.{lang}     the raw valid/test text (sacreBLEU references)
    raw/valid_mono.{lang}                 the raw held-out monolingual text
    rejects.tsv                           with --drop-empty: file<TAB>line<TAB>reason per dropped line
    prepare.json                          summary: inputs, line counts, vocabulary, options
    tmp/                                  the encoded (piece) text; deleted unless --keep-tmp

``--multi30k`` applies the unsupervised split of Lample et al. 2018 ("Unsupervised Machine
Translation Using Monolingual Corpora Only", ICLR 2018) to the Multi30k training data:
English is the first half of ``train.en`` (lines 1-14,500), French the second half of
``train.fr`` (lines 14,501-29,000), so the model never sees an aligned training pair.

``--heldout-mono N`` sets aside the last N lines of each language's monolingual training text
(after ``--max-train-lines``; for ``--multi30k`` the end of each language's half, so the split
is kept) *before* the sentencepiece model is trained: they are never trained on, and serve the
unsupervised model selection of Lample et al. 2018 (Sec. 4.4), round-trip BLEU x -> y -> x.
Default: 0 (none), so that a data directory's training text does not change unless asked.

The package has one module per step: :mod:`.inputs` (1: reading and checking the inputs),
:mod:`.spm` (2: sentencepiece), :mod:`.dictionary` (3: encoding, dict.txt), :mod:`.binarize`
(4: fairseq-preprocess and its check), :mod:`.cache` (the fingerprint in prepare.json),
:mod:`.pipeline` (:func:`prepare`), :mod:`.multi30k` and :mod:`.cli` (``smallcap-prepare``).
"""
import json  # noqa: F401  (a module attribute before the split: tests/test_round_trip.py uses prep.json)

from .binarize import binarize_all, read_mmap_sizes, run_fairseq_preprocess, verify_binarized  # noqa: F401
from .cache import _fingerprint, expected_outputs  # noqa: F401
from .cli import build_parser, check_args, cli_main, run_from_args  # noqa: F401
from .common import (  # noqa: F401
    FORMAT_VERSION, HELDOUT_SPLIT, PROG, PathLike, PrepareError, file_sha256, logger)
from .dictionary import (  # noqa: F401
    FAIRSEQ_SPECIAL_SYMBOLS, FAIRSEQ_UNK, dictionary_piece_ids, encode_all, write_fairseq_dict)
from .inputs import (  # noqa: F401
    SourceArg, SourceStats, TextSource, copy_mono_sources, copy_parallel_sources, count_lines, heldout_count,
    hold_out_mono, is_empty, iter_source_lines, read_inputs)
from .multi30k import (  # noqa: F401
    MULTI30K_LANGS, MULTI30K_NAMES, default_multi30k_dir, multi30k_sources, prepare_multi30k)
from .pipeline import prepare  # noqa: F401
from .spm import (  # noqa: F401
    DEFAULT_SPM_INPUT_SENTENCE_SIZE, DEFAULT_VOCAB_SIZE, ENCODE_BATCH_LINES, SPM_MODEL_TYPES, EncodedFile,
    SpmOptions, encode_file, install_spm_model, load_spm, make_sentencepiece, normalize_spaces,
    train_sentencepiece)
