"""Unsupervised translation from monolingual data only, with one shared encoder-decoder.

Objectives, each weighted by its own piecewise-linear lambda schedule (``"0:1,20000:0.1"``):

* **MASS** span masking (Song et al. 2019): the encoder sees a sentence with a contiguous ~50%
  span masked, the decoder predicts the span (``--lambda-mass``). Used for pretraining.
* **Denoising auto-encoding** (Lample et al. 2018, "Unsupervised Machine Translation Using
  Monolingual Corpora Only"): word shuffle, dropout and blanking (``--lambda-dae``).
* **Online back-translation** in every direction (Lample et al. 2018; Artetxe et al. 2018): each
  monolingual batch is translated with the current model (eval mode, no gradient, batched
  greedy decoding, or sampled with ``--bt-sampling-topk``; noised with ``--bt-noise``: Edunov
  et al. 2018) and the model learns to translate it back (``--lambda-bt``).
* **Back-parallel** supervised translation of curated pseudo-parallel pairs made by
  ``smallcap-back-parallel`` (``--back-parallel-data``, ``--lambda-bp``).

Data-driven curation (see :mod:`fairseq_smallcap.curation`): back-translated pairs scored by the
model itself and filtered online (``--bt-filter-*``), and a competence-based curriculum over the
monolingual sentences (``--curriculum-by``, Platanios et al. 2019).

The data layout is that of fairseq's ``online_backtranslation`` task (``dict.txt``,
``{lang}/train.*``, ``valid|test.{src}-{tgt}.*``), and so are the flag names where they mean the
same thing. Unlike that task, the language tokens (``__en__``, ``__fr__``) and ``<mask>`` are
added to the dictionary when the task is set up, so checkpoints load in ``fairseq-generate`` and
``fairseq-interactive``. The target language is the first decoder token, the source language the
first encoder token. Validation covers every direction present on disk (loss and, with
``--eval-bleu``, sacreBLEU; ``bleu`` is their mean, usable as ``--best-checkpoint-metric``).
"""
import logging
import os
import zlib
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import II, DictConfig, open_dict

import numpy as np
import torch
from fairseq import utils
from fairseq.data import (
    Dictionary,
    LanguagePairDataset,
    PrependTokenDataset,
    RoundRobinZipDatasets,
    TransformEosLangPairDataset,
    data_utils,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.tasks import FairseqTask, register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask, load_langpair_dataset

from ..backtranslation import greedy_decode, make_backtranslated_source
from ..curation import import_plugins
from ..curation.bt_filter import BackTranslationFilter, select_rows
from ..curation.pair_scores import BackTranslatedPairs
from ..errors import SmallcapError, reported
from ..data import EpochNoisingDataset, MassSpanMaskingDataset, build_word_noiser, word_noise_scheme
from ..data.sentencepiece_noising import WORD_NOISE_SCHEMES
from ..data.curriculum import DIFFICULTIES, as_cdf, competence
from ..schedules import parse_schedule

logger = logging.getLogger(__name__)

OBJECTIVES = ("MASS", "DAE", "BT", "BP")
MASK_SYMBOL = "<mask>"


def lang_token(lang: str) -> str:
    return f"__{lang}__"


class UnsupervisedTranslationError(SmallcapError, ValueError):
    """Bad data directory, language or flag given to the unsupervised_translation task."""


@dataclass
class UnsupervisedTranslationConfig(TranslationConfig):
    mono_langs: str = field(
        default="en,fr",
        metadata={"help": "comma-separated languages of the monolingual training data "
                  "({data}/{lang}/train.*); one __lang__ token is added to the dictionary for "
                  "each, so use the same list for training and inference"},
    )
    lambda_mass: str = field(
        default="0",
        metadata={"help": "MASS span-masking weight, a constant or a piecewise-linear schedule "
                  "'update:value,update:value' (e.g. '0:1,20000:0.1')"},
    )
    lambda_dae: str = field(
        default="1", metadata={"help": "denoising auto-encoder weight (constant or schedule)"}
    )
    lambda_bt: str = field(
        default="1", metadata={"help": "online back-translation weight (constant or schedule)"}
    )
    lambda_bp: str = field(
        default="0",
        metadata={"help": "supervised translation of curated back-parallel pairs "
                  "(--back-parallel-data, made by smallcap-back-parallel) weight (constant or schedule)"},
    )
    back_parallel_data: Optional[str] = field(
        default=None,
        metadata={"help": "directory of curated pseudo-parallel pairs train.{src}-{tgt}.* "
                  "written by smallcap-back-parallel (with --lambda-bp)"},
    )
    mass_span_ratio: float = field(
        default=0.5, metadata={"help": "MASS: fraction of each sentence masked as one span"}
    )
    mass_mask_prob: float = field(
        default=0.8, metadata={"help": "MASS: probability that a span token becomes <mask>"}
    )
    mass_random_prob: float = field(
        default=0.1, metadata={"help": "MASS: probability that a span token becomes a random "
                               "token (the rest stay unchanged)"}
    )
    mass_legacy_shift: bool = field(
        default=False,
        metadata={"help": "MASS ablation only: feed the decoder the misaligned input of releases "
                  "before the teacher-forcing fix (x[j-2] at span position j, so the decoder never "
                  "sees the previous token); off, the decoder input is MASS's x[j-1]"},
    )
    word_noise_scheme: ChoiceEnum(WORD_NOISE_SCHEMES) = field(
        default="auto",
        metadata={"help": "DAE: how subwords make the words that are shuffled, dropped and blanked: "
                  "sentencepiece ('▁' starts a word), subword_nmt ('@@' continues one), or auto "
                  "(read off the dictionary)"},
    )
    max_word_shuffle_distance: float = field(
        default=3.0, metadata={"help": "DAE: maximum word shuffle distance"}
    )
    word_dropout_prob: float = field(
        default=0.1, metadata={"help": "DAE: word dropout probability"}
    )
    word_blanking_prob: float = field(
        default=0.2, metadata={"help": "DAE: word blanking probability"}
    )
    bt_max_len_a: float = field(
        default=1.3, metadata={"help": "BT: a back-translation stops after "
                               "a * source_length + b tokens"}
    )
    bt_max_len_b: int = field(default=5, metadata={"help": "BT: see --bt-max-len-a"})
    bt_sampling_topk: int = field(
        default=0, metadata={"help": "BT: 0 translates greedily; -1 samples each token from the "
                             "model's whole distribution, K > 0 from its K most likely tokens "
                             "(Edunov et al. 2018: sampled back-translations train better than "
                             "greedy ones)"}
    )
    bt_sampling_temperature: float = field(
        default=1.0, metadata={"help": "BT: with --bt-sampling-topk, the logits are divided by "
                               "this before sampling (< 1: closer to greedy)"}
    )
    bt_noise: bool = field(
        default=False, metadata={"help": "BT: apply the DAE word noise (--max-word-shuffle-distance, "
                                 "--word-dropout-prob, --word-blanking-prob) to each back-translated "
                                 "source (Edunov et al. 2018's noised back-translation); the "
                                 "--bt-filter-* scores judge the translation before the noise"}
    )
    bt_show_samples_interval: int = field(
        default=500, metadata={"help": "log one back-translated sample every N updates "
                               "(0: never)"}
    )
    bt_filter_scores: str = field(
        default="",
        metadata={"help": "online curation of back-translated pairs: comma-separated pair "
                  "scores (registered: dual_xent, length_ratio, copy_rate, repeated_ngrams, and "
                  "those of --curation-plugins); empty: train on every pair"},
    )
    bt_filter_weights: str = field(
        default="", metadata={"help": "weights of --bt-filter-scores in the combined score "
                              "(comma-separated, default 1 each)"}
    )
    bt_filter_keep: str = field(
        default="1",
        metadata={"help": "fraction of each back-translated batch kept (lowest combined "
                  "scores), a constant or a schedule such as '0:1,1000:1,2000:0.7'"},
    )
    bt_filter_max_score: Optional[float] = field(
        default=None, metadata={"help": "also drop back-translated pairs whose combined score "
                                "is above this"}
    )
    bt_filter_normalize: bool = field(
        default=True,
        metadata={"help": "standardise each pair score over the batch (zero mean, unit variance) "
                  "before weighting, so that scores in nats and rates in [0, 1] weigh alike; "
                  "--no-bt-filter-normalize: weight the raw scores"},
    )
    curriculum_by: str = field(
        default="",
        metadata={"help": "competence-based curriculum (Platanios et al. 2019) over the "
                  "monolingual sentences, by this difficulty: length or rarity (or one "
                  "registered by --curation-plugins); empty: off"},
    )
    curriculum_updates: int = field(
        default=2000, metadata={"help": "curriculum: updates until the competence reaches 1 "
                                "(every sentence in use)"}
    )
    curriculum_init_competence: float = field(
        default=0.1, metadata={"help": "curriculum: competence at update 0 (share of the "
                               "easiest sentences in use)"}
    )
    curriculum_refresh_batches: int = field(
        default=1000,
        metadata={"help": "curriculum: while the competence is below 1, an epoch holds at most "
                  "about this many batches of each objective (a random draw of the sentences in "
                  "use), so the competence grows on corpora of any size (0: whole epochs); each "
                  "such epoch ends as any epoch does (validation, epoch checkpoint: prefer "
                  "--validate-interval-updates, --save-interval-updates, --no-epoch-checkpoints), "
                  "and a resumed epoch is drawn with the competence of the checkpoint's update"},
    )
    curation_plugins: str = field(
        default="", metadata={"help": "comma-separated modules (names or .py paths) that register "
                              "more pair scores or curriculum difficulties"}
    )
    max_source_positions: int = field(
        default=512, metadata={"help": "max number of tokens in the source sequence"}
    )
    max_target_positions: int = field(
        default=512, metadata={"help": "max number of tokens in the target sequence"}
    )
    seed: int = II("common.seed")
    eval_bleu_args: Optional[str] = field(
        default='{"beam": 1, "max_len_a": 1.3, "max_len_b": 5}',
        metadata={"help": "generation args for BLEU scoring during validation, as JSON"},
    )
    eval_bleu_remove_bpe: Optional[str] = field(
        default="sentencepiece",
        metadata={"help": "remove BPE before computing BLEU", "argparse_const": "@@ "},
    )
    eval_round_trip: bool = field(
        default=False,
        metadata={"help": "unsupervised model selection (Lample et al. 2018, Sec. 4.4): also "
                  "validate on the held-out monolingual sentences {data}/{lang}/{valid}.bin "
                  "(smallcap-prepare --heldout-mono) by round-trip BLEU x -> y -> x (greedy), "
                  "logged as round_trip_{lang}_bleu and their mean round_trip_bleu (usable as "
                  "--best-checkpoint-metric round_trip_bleu --maximize-best-checkpoint-metric); "
                  "needs no parallel data"},
    )


@register_task("unsupervised_translation", dataclass=UnsupervisedTranslationConfig)
class UnsupervisedTranslationTask(TranslationTask):
    """One shared model translating between the ``--mono-langs``, trained from monolingual
    data with MASS, denoising and online back-translation (see the module docstring)."""

    cfg: UnsupervisedTranslationConfig
    # noise and back-translation give a sample id another source at every step: per-id teacher
    # outputs stored ahead of training (--teacher-topk-data) cannot be used
    stable_sample_ids = False

    def __init__(self, cfg: UnsupervisedTranslationConfig, dictionary: Dictionary, langs: List[str]):
        super().__init__(cfg, dictionary, dictionary)
        self.dictionary = dictionary
        self.langs = langs
        self.mask_idx = dictionary.index(MASK_SYMBOL)
        self.lang_idx = {lang: dictionary.index(lang_token(lang)) for lang in langs}
        self.lambdas = {
            "MASS": parse_schedule(cfg.lambda_mass, "--lambda-mass"),
            "DAE": parse_schedule(cfg.lambda_dae, "--lambda-dae"),
            "BT": parse_schedule(cfg.lambda_bt, "--lambda-bt"),
            "BP": parse_schedule(cfg.lambda_bp, "--lambda-bp"),
        }
        self.never_generated = [self.mask_idx, dictionary.bos(), *self.lang_idx.values()]
        self._last_bt_sample_shown = -1
        import_plugins(cfg.curation_plugins.split(","))
        self.difficulty = DIFFICULTIES.resolve(cfg.curriculum_by, "--curriculum-by")[0] if cfg.curriculum_by else None
        if self.difficulty and not 0 < cfg.curriculum_init_competence <= 1:
            raise UnsupervisedTranslationError(
                f"--curriculum-init-competence {cfg.curriculum_init_competence}: must be in (0, 1]")
        self._num_updates = 0  # for the curriculum
        self._buffer_notice_given = False  # (get_batch_iterator: --data-buffer-size is not used)
        if cfg.bt_sampling_topk < -1:
            raise UnsupervisedTranslationError(
                f"--bt-sampling-topk {cfg.bt_sampling_topk}: must be -1 (the whole distribution), "
                "0 (greedy) or a number of tokens")
        if not cfg.bt_sampling_temperature > 0:
            raise UnsupervisedTranslationError(
                f"--bt-sampling-temperature {cfg.bt_sampling_temperature}: must be > 0")
        if cfg.bt_sampling_temperature != 1.0 and cfg.bt_sampling_topk == 0:
            raise UnsupervisedTranslationError(
                f"--bt-sampling-temperature {cfg.bt_sampling_temperature} has no effect on greedy "
                "back-translation: give --bt-sampling-topk too")
        self.bt_noiser = None  # --bt-noise: built with the training data (its word grouping)
        self.bt_filter = None
        if cfg.bt_filter_scores:
            self.bt_filter = BackTranslationFilter(
                cfg, cfg.bt_filter_scores, cfg.bt_filter_weights, cfg.bt_filter_keep, cfg.bt_filter_max_score,
                cfg.bt_filter_normalize)

    # ------------------------------------------------------------------ set-up
    @classmethod
    @reported
    def setup_task(cls, cfg: UnsupervisedTranslationConfig, **kwargs):
        paths = utils.split_paths(cfg.data) if cfg.data else []
        if not paths:
            raise UnsupervisedTranslationError("unsupervised_translation: no data directory given")
        for path in paths:
            if not os.path.isdir(path):
                raise UnsupervisedTranslationError(
                    f"unsupervised_translation: data directory not found: {path}"
                )
        dict_path = os.path.join(paths[0], "dict.txt")
        if not os.path.isfile(dict_path):
            raise UnsupervisedTranslationError(
                f"unsupervised_translation: no dictionary at {dict_path} "
                "(prepare the data with smallcap-prepare or fairseq-preprocess)"
            )
        langs = [lang.strip() for lang in cfg.mono_langs.split(",") if lang.strip()]
        if len(langs) < 2 or len(set(langs)) != len(langs):
            raise UnsupervisedTranslationError(
                f"--mono-langs needs at least two distinct languages, got {cfg.mono_langs!r}"
            )
        for flag, lang in (("--source-lang/-s", cfg.source_lang), ("--target-lang/-t", cfg.target_lang)):
            if lang is not None and lang not in langs:
                raise UnsupervisedTranslationError(
                    f"unknown language {lang!r} for {flag}: the model knows --mono-langs "
                    f"{','.join(langs)}"
                )
        dictionary = cls.load_dictionary(dict_path)
        dictionary.add_symbol(MASK_SYMBOL)
        for lang in sorted(langs):  # sorted: ids do not depend on the order of --mono-langs
            dictionary.add_symbol(lang_token(lang))
        logger.info(f"dictionary: {len(dictionary)} types (with <mask> and language tokens "
                    f"of {','.join(sorted(langs))})")
        return cls(cfg, dictionary, langs)

    @reported
    def build_model(self, cfg, from_checkpoint=False):
        """The model; building it to load a checkpoint into (``fairseq-generate``,
        ``fairseq-interactive``), ``--init-embeddings`` is dropped: the checkpoint's weights
        replace the initial embeddings, and the file need not exist any more."""
        if from_checkpoint and getattr(cfg, "init_embeddings", None):
            if isinstance(cfg, DictConfig):
                with open_dict(cfg):
                    cfg.init_embeddings = None
            else:
                cfg.init_embeddings = None
        return super().build_model(cfg, from_checkpoint)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def objective_used(self, objective: str) -> bool:
        return any(value != 0 for _, value in self.lambdas[objective].pieces)

    # ------------------------------------------------------------------ data
    @reported
    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = utils.split_paths(self.cfg.data)
        if split == self.cfg.train_subset:
            dataset = self.load_monolingual_dataset(paths[(epoch - 1) % len(paths)], split)
        elif self.cfg.eval_round_trip and not (self.cfg.source_lang and self.cfg.target_lang):
            dataset = self.load_round_trip_dataset(paths[0], split, combine)
        else:
            dataset = self.load_parallel_dataset(paths[0], split, combine)
        self.datasets[split] = dataset
        return dataset

    def lang_pair_dataset(self, src, tgt, tgt_lang: str) -> TransformEosLangPairDataset:
        """(src, tgt) pairs whose decoder input starts with the target language token."""
        pair = LanguagePairDataset(
            src, src.sizes, self.dictionary, tgt=tgt, tgt_sizes=tgt.sizes,
            tgt_dict=self.dictionary, left_pad_source=self.cfg.left_pad_source,
            left_pad_target=self.cfg.left_pad_target,
        )
        return TransformEosLangPairDataset(
            pair, src_eos=self.dictionary.eos(), tgt_bos=self.dictionary.eos(),
            new_tgt_bos=self.lang_idx[tgt_lang],
        )

    def load_monolingual_dataset(self, data_path: str, split: str) -> RoundRobinZipDatasets:
        objectives = [obj for obj in OBJECTIVES if self.objective_used(obj)]
        if not objectives:
            raise UnsupervisedTranslationError(
                "--lambda-mass, --lambda-dae, --lambda-bt and --lambda-bp are all zero: nothing to train"
            )
        datasets, epoch_aware, difficulty_cdf = OrderedDict(), [], {}
        if "BP" in objectives:
            datasets.update(self.load_back_parallel_dataset(split))
            objectives.remove("BP")
        for lang in (self.langs if objectives else []):
            prefix = os.path.join(data_path, lang, split)
            mono = data_utils.load_indexed_dataset(prefix, self.dictionary, self.cfg.dataset_impl)
            if mono is None:
                raise UnsupervisedTranslationError(
                    f"no monolingual {split} data for {lang!r}: expected {prefix}.bin/.idx "
                    "(see smallcap-prepare)"
                )
            lang_idx = self.lang_idx[lang]
            clean = self.lang_pair_dataset(PrependTokenDataset(mono, lang_idx), mono, lang)
            if "MASS" in objectives:
                mass = MassSpanMaskingDataset(
                    clean.dataset, self.dictionary, lang_idx, self.mask_idx, seed=self.cfg.seed,
                    ratio=self.cfg.mass_span_ratio, mask_prob=self.cfg.mass_mask_prob,
                    random_prob=self.cfg.mass_random_prob,
                    num_special_tail=1 + len(self.langs), left_pad_source=self.cfg.left_pad_source,
                    legacy_shift=self.cfg.mass_legacy_shift,
                )
                datasets[f"{lang}-MASS"] = mass
                epoch_aware.append(mass)
            if "DAE" in objectives:
                noisy = EpochNoisingDataset(mono, self.dictionary, self.cfg.seed, self.word_noiser(data_path))
                datasets[f"{lang}-DAE"] = self.lang_pair_dataset(PrependTokenDataset(noisy, lang_idx), mono, lang)
                epoch_aware.append(noisy)
            if "BT" in objectives:
                datasets[f"{lang}-BT"] = clean
                if self.cfg.bt_noise and self.bt_noiser is None:
                    self.bt_noiser = self.word_noiser(data_path)
            logger.info(f"{lang}: {len(mono)} monolingual sentences from {prefix} "
                        f"for {', '.join(objectives)}")
            if self.difficulty is not None:
                cdf = as_cdf(self.difficulty(mono, self.dictionary))
                difficulty_cdf.update({f"{lang}-{obj}": cdf for obj in objectives})
        return _EpochRoundRobinZipDatasets(datasets, epoch_aware, difficulty_cdf)

    def word_noiser(self, data_path: str):
        """Lample et al.'s word noise with the DAE flags, for DAE and --bt-noise."""
        return build_word_noiser(self.dictionary, self.word_scheme(data_path), self.cfg.max_word_shuffle_distance,
                                 self.cfg.word_dropout_prob, self.cfg.word_blanking_prob)

    def word_scheme(self, data_path: str) -> str:
        """The DAE word grouping: --word-noise-scheme, or read off the dictionary (logged)."""
        scheme = word_noise_scheme(self.dictionary, self.cfg.word_noise_scheme,
                                   source=os.path.join(data_path, "dict.txt"))
        logger.info(f"DAE word noise: {scheme} word grouping"
                    + (" (read off the dictionary)" if self.cfg.word_noise_scheme == "auto" else ""))
        return scheme

    def load_back_parallel_dataset(self, split: str) -> Dict[str, TransformEosLangPairDataset]:
        """The curated pseudo-parallel pairs of ``--back-parallel-data``, one ``{src}{tgt}-BP``
        dataset per direction found there."""
        path = self.cfg.back_parallel_data
        if not path or not os.path.isdir(path):
            raise UnsupervisedTranslationError(
                f"--lambda-bp {self.cfg.lambda_bp} needs --back-parallel-data, a directory written "
                f"by smallcap-back-parallel (got {path!r})")
        datasets = OrderedDict()
        for src in self.langs:
            for tgt in self.langs:
                if src == tgt or not os.path.exists(os.path.join(path, f"{split}.{src}-{tgt}.{src}.idx")):
                    continue
                pair = load_langpair_dataset(
                    path, split, src, self.dictionary, tgt, self.dictionary, combine=False,
                    dataset_impl=self.cfg.dataset_impl, upsample_primary=1,
                    left_pad_source=self.cfg.left_pad_source, left_pad_target=self.cfg.left_pad_target,
                    max_source_positions=self.cfg.max_source_positions,
                    max_target_positions=self.cfg.max_target_positions, prepend_bos_src=self.lang_idx[src],
                )
                datasets[f"{src}{tgt}-BP"] = TransformEosLangPairDataset(
                    pair, src_eos=self.dictionary.eos(), tgt_bos=self.dictionary.eos(),
                    new_tgt_bos=self.lang_idx[tgt])
                logger.info(f"back-parallel {src}->{tgt}: {len(pair)} curated pairs from {path}")
        if not datasets:
            raise UnsupervisedTranslationError(
                f"--back-parallel-data {path}: no {split}.{{src}}-{{tgt}}.{{src}}.idx pairs of "
                f"--mono-langs {','.join(self.langs)} (run smallcap-back-parallel)")
        return datasets

    def get_batch_iterator(self, dataset, *args, **kwargs):
        # fairseq's batch_by_size drops the last batch when its size is not a multiple of
        # --required-batch-size-multiple (8 by default; fairseq issue #5036): the longest
        # sentences of every validation, test and training epoch would silently go missing.
        if kwargs.get("required_batch_size_multiple", 1) > 1:
            kwargs["required_batch_size_multiple"] = 1
        # No prefetch thread (--data-buffer-size): when training stops, fairseq leaves that daemon
        # thread building the next batches, and under Python 3.11 a daemon thread caught inside
        # torch at interpreter exit aborts the finished run ("terminate called without an active
        # exception", exit status 134; every run with OMP_NUM_THREADS=1 here). With --num-workers
        # N the DataLoader's worker processes still prefetch. (fairseq's own tasks, with our models
        # or criterion, keep the thread and are covered by clean_exit instead.)
        if (kwargs.get("data_buffer_size") or 0) > 0 and not self._buffer_notice_given:
            logger.info(f"--data-buffer-size {kwargs['data_buffer_size']} (fairseq's default is 10) is ignored: "
                        "unsupervised_translation builds its batches without fairseq's prefetch thread (at exit "
                        "it aborted finished runs under Python 3.11); --num-workers N prefetches in worker "
                        "processes")
            self._buffer_notice_given = True
        kwargs["data_buffer_size"] = 0
        curriculum = isinstance(dataset, _EpochRoundRobinZipDatasets) and bool(dataset.difficulty_cdf)
        if curriculum:
            updates = self._updates_so_far()
            value = competence(updates, self.cfg.curriculum_updates, self.cfg.curriculum_init_competence)
            # Below full competence an epoch is capped, so that the next one (built with the
            # competence of its own start) comes after at most --curriculum-refresh-batches.
            max_batches = self.cfg.curriculum_refresh_batches if value < 1 else 0
            dataset.set_competence(value, max_batches=max_batches, max_tokens=kwargs.get("max_tokens"),
                                   max_sentences=kwargs.get("max_sentences"),
                                   seed=kwargs.get("seed", self.cfg.seed), epoch=kwargs.get("epoch", 1))
        iterator = super().get_batch_iterator(dataset, *args, **kwargs)
        if curriculum:
            in_use = ", ".join(f"{key} {len(ix)}" for key, ix in dataset._ordered_indices.items())
            logger.info(f"curriculum by {self.cfg.curriculum_by}: competence {dataset.competence:.3f} at "
                        f"update {updates}; sentences in use: {in_use}")
        return iterator

    def _updates_so_far(self) -> int:
        """Updates done: seen by train_step, or (before the first update after a resume) the
        ``num_updates`` the trainer logs when it loads a checkpoint."""
        meter = metrics.get_meter("default", "num_updates")
        logged = getattr(meter, "val", None) if meter is not None else None
        return max(self._num_updates, int(logged or 0))

    def load_round_trip_dataset(self, data_path: str, split: str, combine: bool = False):
        """``--eval-round-trip``: the parallel directions of ``split`` (if any) zipped with one
        ``{lang}-RT`` dataset of clean held-out monolingual sentences per language that has
        ``{data}/{lang}/{split}.bin``, each sentence used once. Round-trip BLEU (Lample et al.
        2018, "Unsupervised Machine Translation Using Monolingual Corpora Only", Sec. 4.4)
        needs no parallel data: without any, validation runs on the round trips alone."""
        datasets = OrderedDict()
        has_parallel = any(self._parallel_exists(data_path, split, s, t)
                           for s in self.langs for t in self.langs if s != t)
        if has_parallel:
            datasets.update(self.load_parallel_dataset(data_path, split, combine, zipped=False))
        for lang in self.langs:
            prefix = os.path.join(data_path, lang, split)
            mono = data_utils.load_indexed_dataset(prefix, self.dictionary, self.cfg.dataset_impl)
            if mono is None:
                continue
            lang_idx = self.lang_idx[lang]
            datasets[f"{lang}-RT"] = self.lang_pair_dataset(PrependTokenDataset(mono, lang_idx), mono, lang)
            logger.info(f"{lang}: {len(mono)} held-out monolingual sentences from {prefix} "
                        "for round-trip BLEU")
        if not has_parallel and datasets:
            logger.warning(f"no parallel {split} data: the validation loss is logged as 0; select "
                           "checkpoints with --best-checkpoint-metric round_trip_bleu "
                           "--maximize-best-checkpoint-metric")
        if not any(key.endswith("-RT") for key in datasets):
            if not has_parallel:
                raise UnsupervisedTranslationError(
                    f"--eval-round-trip: no {split} data in {data_path}: neither held-out "
                    f"monolingual {os.path.join('{lang}', split)}.bin (smallcap-prepare "
                    f"--heldout-mono) nor parallel {split}.{self.langs[0]}-{self.langs[1]}.* files")
            logger.warning(f"--eval-round-trip: no held-out monolingual {split} data "
                           f"({os.path.join(data_path, '{lang}', split)}.bin); no round-trip BLEU "
                           f"on {split}")
        return _ZipOnceDatasets(datasets)

    def load_parallel_dataset(self, data_path: str, split: str, combine: bool = False,
                              zipped: bool = True):
        """Parallel ``split.{src}-{tgt}`` data: one direction with ``-s/-t`` (for
        fairseq-generate), else every direction found on disk (validation during training).
        ``zipped=False``: the ``{src}-{tgt}`` datasets as a dict."""
        if self.cfg.source_lang and self.cfg.target_lang:
            directions = [(self.cfg.source_lang, self.cfg.target_lang)]
        else:
            directions = [
                (src, tgt) for src in self.langs for tgt in self.langs
                if src != tgt and self._parallel_exists(data_path, split, src, tgt)
            ]
        if not directions:
            raise UnsupervisedTranslationError(
                f"no parallel {split} data in {data_path}: expected files like "
                f"{split}.{self.langs[0]}-{self.langs[1]}.{self.langs[0]}.bin"
            )
        pairs = OrderedDict()
        for src, tgt in directions:
            if not self._parallel_exists(data_path, split, src, tgt):
                raise UnsupervisedTranslationError(
                    f"no parallel {split} data for {src}->{tgt} in {data_path}: expected "
                    f"{split}.{src}-{tgt}.{src}.bin or {split}.{tgt}-{src}.{src}.bin"
                )
            pair = load_langpair_dataset(
                data_path, split, src, self.dictionary, tgt, self.dictionary, combine=combine,
                dataset_impl=self.cfg.dataset_impl, upsample_primary=self.cfg.upsample_primary,
                left_pad_source=self.cfg.left_pad_source,
                left_pad_target=self.cfg.left_pad_target,
                max_source_positions=self.cfg.max_source_positions,
                max_target_positions=self.cfg.max_target_positions,
                truncate_source=self.cfg.truncate_source, shuffle=(split != "test"),
                prepend_bos_src=self.lang_idx[src],
            )
            pairs[f"{src}-{tgt}"] = TransformEosLangPairDataset(
                pair, src_eos=self.dictionary.eos(), tgt_bos=self.dictionary.eos(),
                new_tgt_bos=self.lang_idx[tgt],
            )
        if not zipped:
            return pairs
        if len(pairs) == 1:
            return next(iter(pairs.values()))
        return RoundRobinZipDatasets(pairs)

    def _parallel_exists(self, data_path, split, src, tgt) -> bool:
        return any(
            os.path.exists(os.path.join(data_path, f"{split}.{a}-{b}.{src}.bin"))
            for a, b in ((src, tgt), (tgt, src))
        )

    @reported
    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        if self.cfg.source_lang is None:
            raise UnsupervisedTranslationError("say which language the input is in with -s/--source-lang")
        lang = torch.LongTensor([self.lang_idx[self.cfg.source_lang]])
        tagged = [torch.cat([lang, tokens]) for tokens in src_tokens]
        return LanguagePairDataset(
            tagged, [len(t) for t in tagged], self.dictionary, tgt_dict=self.dictionary,
            left_pad_source=self.cfg.left_pad_source, constraints=constraints,
        )

    # ------------------------------------------------------------------ generation
    def build_generator(self, models, args, seq_gen_cls=None, extra_gen_cls_kwargs=None,
                        prefix_allowed_tokens_fn=None):
        extra = dict(extra_gen_cls_kwargs or {})
        extra["symbols_to_strip_from_output"] = set(extra.get("symbols_to_strip_from_output") or ()) | set(
            self.never_generated
        )
        return super().build_generator(models, args, seq_gen_cls, extra, prefix_allowed_tokens_fn)

    def target_lang_index(self, sample) -> int:
        """The language to produce: the decoder's first token if the sample has a target side,
        else ``-t/--target-lang``."""
        prev = sample["net_input"].get("prev_output_tokens")
        if prev is not None:
            return int(prev[0, 0])
        if self.cfg.target_lang is None:
            raise UnsupervisedTranslationError("say which language to produce with -t/--target-lang")
        return self.lang_idx[self.cfg.target_lang]

    @reported
    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        with torch.no_grad():
            return generator.generate(
                models, sample, prefix_tokens=prefix_tokens, constraints=constraints,
                bos_token=self.target_lang_index(sample),
            )

    # ------------------------------------------------------------------ training
    def other_lang(self, lang: str) -> str:
        """The language a ``lang`` sentence is back-translated into."""
        others = [other for other in self.langs if other != lang]
        return others[0] if len(others) == 1 else others[np.random.randint(len(others))]

    def backtranslate(self, sample, model, lang: str, update_num: int = 0):
        """Replace the source of a monolingual ``lang`` batch by its translation into another
        language, produced by the current model (eval mode, no gradient); with
        ``--bt-filter-scores``, keep only the best pairs. Returns the batch and the filter's
        logging sums."""
        other = self.other_lang(lang)
        net_input = sample["net_input"]
        was_training = model.training
        model.eval()
        max_len = min(self.cfg.max_source_positions, model.max_decoder_positions()) - 1
        hypotheses = greedy_decode(
            model, net_input["src_tokens"], net_input["src_lengths"],
            bos=torch.full_like(net_input["src_lengths"], self.lang_idx[other]),
            eos=self.dictionary.eos(), pad=self.dictionary.pad(),
            max_len_a=self.cfg.bt_max_len_a, max_len_b=self.cfg.bt_max_len_b,
            max_len=max_len, banned_tokens=self.never_generated,
            sampling_topk=self.cfg.bt_sampling_topk, temperature=self.cfg.bt_sampling_temperature,
            generator=self.bt_generator(net_input["src_tokens"].device, sample, lang, update_num),
        )
        model.train(was_training)
        src_tokens, src_lengths = make_backtranslated_source(
            hypotheses, self.lang_idx[other], self.dictionary.pad(), self.dictionary.eos(),
            self.cfg.left_pad_source,
        )
        self._show_bt_sample(sample, src_tokens, lang, other, update_num)
        bt_sample = {**sample, "net_input": {**net_input, "src_tokens": src_tokens, "src_lengths": src_lengths}}
        log, kept = {}, hypotheses
        if self.bt_filter is not None:  # the scores judge the translations themselves, before any noise
            pad = self.dictionary.pad()
            pairs = BackTranslatedPairs(
                model=model, task=self, source_lang=other, target_lang=lang, translations=hypotheses,
                originals=[utils.strip_pad(t, pad) for t in sample["target"]], sample=bt_sample,
                mono_sample=sample,
            )
            rows, log = self.bt_filter.select(pairs, update_num)
            bt_sample = select_rows(bt_sample, rows, pad)
            kept = [hypotheses[i] for i in rows.tolist()]
        if self.bt_noiser is not None and kept:
            src_tokens, src_lengths = make_backtranslated_source(
                self.noised(kept, self.draw_key("noise", bt_sample, lang, update_num)), self.lang_idx[other],
                self.dictionary.pad(), self.dictionary.eos(), self.cfg.left_pad_source)
            bt_sample = {**bt_sample, "net_input": {**bt_sample["net_input"], "src_tokens": src_tokens,
                                                    "src_lengths": src_lengths}}
        return bt_sample, log

    def draw_key(self, what: str, sample, lang: str, update_num: int) -> int:
        """The seed of one batch's random draws: (--seed, update, language, the batch's sentence
        ids), so that a run is reproducible, a resumed run draws what it would have drawn, and
        the micro-batches of one update (--update-freq, data-parallel workers) draw apart."""
        ids = sample["id"].cpu().numpy().astype("int64").tobytes()
        return zlib.crc32(ids, zlib.crc32(f"bt-{what}-{self.cfg.seed}-{update_num}-{lang}".encode()))

    def bt_generator(self, device, sample, lang: str, update_num: int) -> Optional[torch.Generator]:
        """The random numbers of --bt-sampling-topk's draws (None: greedy, no draws)."""
        if self.cfg.bt_sampling_topk == 0:
            return None
        generator = torch.Generator(device=device)
        generator.manual_seed(self.draw_key("sample", sample, lang, update_num))
        return generator

    def noised(self, hypotheses: List[torch.Tensor], seed: int) -> List[torch.Tensor]:
        """--bt-noise: the back-translations (1-D, ending with eos) with the DAE word noise. One
        sentence at a time, as fairseq's NoisingDataset calls the noiser (its word dropout counts
        a padded column's padding as words), after one copy of the batch to the CPU."""
        pad = self.dictionary.pad()
        device = hypotheses[0].device
        batch = data_utils.collate_tokens(hypotheses, pad, left_pad=False).cpu()
        noisy = []
        with data_utils.numpy_seed(seed):
            for row, hyp in zip(batch, hypotheses):
                tokens = row[: hyp.numel()].unsqueeze(1)
                noisy.append(self.bt_noiser.noising(tokens, torch.tensor([hyp.numel()]))[:, 0])
        return [row[row.ne(pad)].to(device) for row in noisy]

    def _show_bt_sample(self, sample, src_tokens, lang, other, update_num):
        interval = self.cfg.bt_show_samples_interval
        if interval <= 0 or update_num % interval != 0 or update_num == self._last_bt_sample_shown:
            return
        self._last_bt_sample_shown = update_num
        pad = self.dictionary.pad()
        original = self.dictionary.string(utils.strip_pad(sample["target"][0], pad), "sentencepiece")
        generated = self.dictionary.string(utils.strip_pad(src_tokens[0], pad)[1:], "sentencepiece")
        logger.info(f"back-translation sample (update {update_num}): [{lang}] {original} "
                    f"-> [{other}] {generated}")

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        self._num_updates = update_num
        weights = {obj: fn(update_num) for obj, fn in self.lambdas.items()}
        total_loss, total_sample_size = 0.0, 0
        logging_output: Dict[str, float] = defaultdict(float)
        for key, batch in sample.items():
            lang, objective = key.split("-")
            if weights[objective] == 0 or not batch:
                continue
            with mixed_precision(batch, enabled=isinstance(optimizer, AMPOptimizer)):
                if objective == "BT":
                    batch, filter_log = self.backtranslate(batch, model, lang, update_num)
                    for name, value in filter_log.items():
                        logging_output[name] += value
                with torch.autograd.profiler.record_function(f"forward_{objective}"):
                    loss, sample_size, log = criterion(model, batch)
            loss = loss * weights[objective]
            if ignore_grad:
                loss = loss * 0
            with torch.autograd.profiler.record_function(f"backward_{objective}"):
                optimizer.backward(loss)
            total_loss += loss.detach().item()
            total_sample_size += sample_size
            for name, value in log.items():
                logging_output[name] += value
                logging_output[f"{objective.lower()}_{name}"] += value
        return total_loss, total_sample_size, dict(logging_output)

    # ------------------------------------------------------------------ validation
    def valid_step(self, sample, model, criterion):
        if "net_input" in sample:  # a single direction
            return self._valid_direction(sample, model, criterion, None)
        total_loss, total_sample_size = 0.0, 0
        logging_output: Dict[str, float] = defaultdict(float)
        for direction, batch in sample.items():
            if not batch:
                continue
            if direction.endswith("-RT"):  # held-out monolingual: round-trip BLEU, no loss
                loss, sample_size, log = 0.0, 0, self._valid_round_trip(batch, model, direction[:-3])
            else:
                loss, sample_size, log = self._valid_direction(batch, model, criterion, direction)
            total_loss += loss.item() if torch.is_tensor(loss) else loss
            total_sample_size += sample_size
            for name, value in log.items():
                logging_output[name] += value
        return total_loss, total_sample_size, dict(logging_output)

    def _valid_direction(self, sample, model, criterion, direction: Optional[str]):
        loss, sample_size, log = FairseqTask.valid_step(self, sample, model, criterion)
        prefix = "" if direction is None else direction.replace("-", "_") + "_"
        if direction is not None:
            for name in ("loss", "nll_loss", "ntokens", "sample_size"):
                if name in log:
                    log[prefix + name] = log[name]
        if self.cfg.eval_bleu:
            log.update(_bleu_statistics(prefix, self._inference_with_bleu(self.sequence_generator, sample, model)))
        return loss, sample_size, log

    def round_trip(self, model, src_tokens, src_lengths, lang: str, via: str):
        """Greedy round trip of a batch of ``lang`` sentences (``[__lang__] x </s>``): x -> y in
        ``via`` -> x_hat in ``lang``, decoded greedily (never sampled) with online
        back-translation's decoder (:func:`~fairseq_smallcap.backtranslation.greedy_decode`,
        ``--bt-max-len-a/b``).
        Returns x_hat, a list of token tensors ending with eos."""
        max_len = min(self.cfg.max_source_positions, model.max_decoder_positions()) - 1
        pad, eos = self.dictionary.pad(), self.dictionary.eos()

        def translate(tokens, lengths, to_lang):
            return greedy_decode(
                model, tokens, lengths, bos=torch.full_like(lengths, self.lang_idx[to_lang]),
                eos=eos, pad=pad, max_len_a=self.cfg.bt_max_len_a, max_len_b=self.cfg.bt_max_len_b,
                max_len=max_len, banned_tokens=self.never_generated,
            )

        y = translate(src_tokens, src_lengths, via)
        y_tokens, y_lengths = make_backtranslated_source(y, self.lang_idx[via], pad, eos,
                                                         self.cfg.left_pad_source)
        return translate(y_tokens, y_lengths, lang)

    def _valid_round_trip(self, sample, model, lang: str) -> Dict[str, float]:
        """sacreBLEU statistics of the round trips x -> y -> x_hat of a batch of held-out
        ``lang`` sentences, BLEU(x_hat, x), through every other language (Lample et al. 2018,
        "Unsupervised Machine Translation Using Monolingual Corpora Only", Sec. 4.4: model
        selection without parallel data). Detokenized with ``--eval-bleu-remove-bpe`` as
        fairseq's ``--eval-bleu`` does; logged under ``_round_trip_{lang}_bleu_*``."""
        import sacrebleu

        net_input = sample["net_input"]
        was_training = model.training
        model.eval()
        pad = self.dictionary.pad()
        tokenizer = getattr(self, "tokenizer", None)

        def decode(tokens, unk_string):
            text = self.dictionary.string(tokens.int().cpu(), self.cfg.eval_bleu_remove_bpe,
                                          unk_string=unk_string)
            return tokenizer.decode(text) if tokenizer is not None else text

        refs = [decode(utils.strip_pad(t, pad), "UNKNOWNTOKENINREF") for t in sample["target"]]
        hyps, all_refs = [], []
        for via in (other for other in self.langs if other != lang):
            x_hat = self.round_trip(model, net_input["src_tokens"], net_input["src_lengths"], lang, via)
            hyps += [decode(t, "UNKNOWNTOKENINHYP") for t in x_hat]
            all_refs += refs
        model.train(was_training)
        if self.cfg.eval_tokenized_bleu:
            bleu = sacrebleu.corpus_bleu(hyps, [all_refs], tokenize="none")
        else:
            bleu = sacrebleu.corpus_bleu(hyps, [all_refs])
        prefix = f"round_trip_{lang}_"
        return {f"{prefix}nsentences": len(refs), **_bleu_statistics(prefix, bleu)}

    def reduce_metrics(self, logging_outputs, criterion):
        if any(log.get("sample_size", 0) for log in logging_outputs) or not any(
            key.startswith("_round_trip_") for log in logging_outputs for key in log
        ):
            FairseqTask.reduce_metrics(self, logging_outputs, criterion)  # BLEU is logged below
        else:
            # only round-trip batches (no parallel data): no loss to reduce (the criterion would
            # divide by a sample size of 0); log 0 with weight 0, which leaves any average as is
            metrics.log_scalar("loss", 0.0, 0, round=3)

        def total(key):
            value = sum(log.get(key, 0) for log in logging_outputs)
            return value.cpu() if torch.is_tensor(value) else value

        def log_losses(prefix):
            sample_size, ntokens = total(prefix + "sample_size"), total(prefix + "ntokens")
            if sample_size:
                metrics.log_scalar(prefix + "loss", total(prefix + "loss") / sample_size / np.log(2),
                                   sample_size, round=3)
            if ntokens and any(prefix + "nll_loss" in log for log in logging_outputs):
                metrics.log_scalar(prefix + "nll_loss", total(prefix + "nll_loss") / ntokens / np.log(2),
                                   ntokens, round=3)

        for objective in OBJECTIVES:
            log_losses(objective.lower() + "_")
        directions = [f"{s}_{t}_" for s in self.langs for t in self.langs if s != t]
        if self.bt_filter is not None:
            for direction in directions:
                pairs = total(f"bt_filter_pairs_{direction[:-1]}")
                if not pairs:
                    continue
                metrics.log_scalar(f"bt_kept_{direction[:-1]}",
                                   total(f"bt_filter_kept_{direction[:-1]}") / pairs, pairs, round=3)
                for name in self.bt_filter.names:
                    metrics.log_scalar(f"bt_{name}_{direction[:-1]}",
                                       total(f"bt_score_{name}_{direction[:-1]}") / pairs, pairs, round=3)
        for prefix in directions:
            log_losses(prefix)
        if self.cfg.eval_bleu:
            bleu_prefixes = [p for p in [""] + directions if total(f"_{p}bleu_totals_0") > 0]
            for prefix in bleu_prefixes:
                _log_bleu(prefix, total)
            direction_bleus = [p for p in bleu_prefixes if p]
            if direction_bleus:
                metrics.log_derived(
                    "bleu", lambda meters: round(float(np.mean(
                        [_bleu_from_meters(meters, p) for p in direction_bleus])), 2)
                )
        round_trips = [f"round_trip_{lang}_" for lang in self.langs]
        logged = [p for p in round_trips if total(f"_{p}bleu_totals_0") > 0]
        for prefix in logged:
            _log_bleu(prefix, total)
        if logged:
            # the languages seen so far in this validation (the first call's list would stick)
            metrics.log_derived("round_trip_bleu", lambda meters: round(float(np.mean(
                [_bleu_from_meters(meters, p) for p in round_trips if f"_{p}bleu_counts" in meters])), 2))


def mixed_precision(sample, enabled: bool):
    """``--amp``: float16 autocast on CUDA (as fairseq does), bfloat16 autocast on CPU, where
    fairseq's own tasks run ``torch.cuda.amp.autocast`` and so stay in float32."""
    on_cuda = sample["net_input"]["src_tokens"].is_cuda
    return torch.autocast(
        device_type="cuda" if on_cuda else "cpu",
        dtype=torch.float16 if on_cuda else torch.bfloat16,
        enabled=enabled,
    )


def _bleu_statistics(prefix: str, bleu) -> Dict[str, float]:
    """A sacreBLEU result's sufficient statistics as logging entries ``_{prefix}bleu_*``, summed
    over batches and workers by :func:`_log_bleu`."""
    log = {f"_{prefix}bleu_sys_len": bleu.sys_len, f"_{prefix}bleu_ref_len": bleu.ref_len}
    for i in range(4):
        log[f"_{prefix}bleu_counts_{i}"] = bleu.counts[i]
        log[f"_{prefix}bleu_totals_{i}"] = bleu.totals[i]
    return log


def _log_bleu(prefix: str, total) -> None:
    metrics.log_scalar(f"_{prefix}bleu_counts", np.array([total(f"_{prefix}bleu_counts_{i}") for i in range(4)]))
    metrics.log_scalar(f"_{prefix}bleu_totals", np.array([total(f"_{prefix}bleu_totals_{i}") for i in range(4)]))
    metrics.log_scalar(f"_{prefix}bleu_sys_len", total(f"_{prefix}bleu_sys_len"))
    metrics.log_scalar(f"_{prefix}bleu_ref_len", total(f"_{prefix}bleu_ref_len"))
    if prefix:
        metrics.log_derived(f"{prefix}bleu", lambda meters: round(_bleu_from_meters(meters, prefix), 2))
    else:
        metrics.log_derived("bleu", lambda meters: round(_bleu_from_meters(meters, prefix), 2))


def _bleu_from_meters(meters, prefix: str) -> float:
    from sacrebleu.metrics import BLEU

    return BLEU.compute_bleu(
        correct=meters[f"_{prefix}bleu_counts"].sum, total=meters[f"_{prefix}bleu_totals"].sum,
        sys_len=int(meters[f"_{prefix}bleu_sys_len"].sum),
        ref_len=int(meters[f"_{prefix}bleu_ref_len"].sum), smooth_method="exp",
    ).score


class _ZipOnceDatasets(RoundRobinZipDatasets):
    """Zipped validation datasets in which every sentence of every dataset is used exactly once:
    a shorter dataset is not repeated round-robin (which would count its sentences twice in
    BLEU), its batches are empty once it is used up."""

    def _map_index(self, key, index):
        o = self._ordered_indices[key]
        return o[index] if index < len(o) else None

    def __getitem__(self, index):
        return OrderedDict(
            (key, None if (i := self._map_index(key, index)) is None else dataset[i])
            for key, dataset in self.datasets.items()
        )

    def collater(self, samples):
        if len(samples) == 0:
            return None
        return OrderedDict(
            (key, dataset.collater([s[key] for s in samples if s[key] is not None]))
            for key, dataset in self.datasets.items()
        )

    def num_tokens(self, index):
        return max(
            dataset.num_tokens(i) for key, dataset in self.datasets.items()
            if (i := self._map_index(key, index)) is not None
        )

    def size(self, index):
        return {key: dataset.size(self._ordered_indices[key][index % len(self._ordered_indices[key])])
                for key, dataset in self.datasets.items()}

    def prefetch(self, indices):
        for key, dataset in self.datasets.items():
            dataset.prefetch([i for i in (self._map_index(key, index) for index in indices) if i is not None])


class _EpochRoundRobinZipDatasets(RoundRobinZipDatasets):
    """RoundRobinZipDatasets that passes the epoch to the datasets drawing new noise/masks, and
    with a curriculum, samples only the sentences whose difficulty CDF is within the competence
    (set before each epoch's batches are built)."""

    def __init__(self, datasets, epoch_aware, difficulty_cdf=None):
        super().__init__(datasets)
        self.epoch_aware = epoch_aware
        self.difficulty_cdf = difficulty_cdf or {}
        self.competence = 1.0
        self.max_batches = 0  # no cap until set_competence asks for one

    def set_competence(self, value: float, max_batches: int = 0, max_tokens: Optional[int] = None,
                       max_sentences: Optional[int] = None, seed: int = 1, epoch: int = 1) -> None:
        """Sample only sentences whose difficulty CDF is within ``value``; with ``max_batches``,
        at most about that many batches of each objective (a random draw of those sentences,
        the batch size estimated from ``max_tokens`` / ``max_sentences``)."""
        self.competence = value
        self.max_batches, self.max_tokens, self.max_sentences = max_batches, max_tokens, max_sentences
        self.seed, self.epoch_drawn = seed, epoch
        self._ordered_indices = None  # rebuilt, filtered, by the next ordered_indices()

    def ordered_indices(self):
        if self._ordered_indices is None:
            super().ordered_indices()
            for key, cdf in self.difficulty_cdf.items():
                indices = self._ordered_indices[key]
                easy = indices[cdf[indices] <= self.competence + 1e-9]
                self._ordered_indices[key] = easy if len(easy) else indices[np.argsort(cdf[indices])[:1]]
            # one cap for every objective (the tightest), so that the zipped epoch's length,
            # fixed by the longest dataset, leaves no drawn sentence unused
            limits = [self._limit(key) for key in self.difficulty_cdf]
            if limits and min(limits) < float("inf"):
                for key in self.difficulty_cdf:
                    self._ordered_indices[key] = self._draw(key, int(min(limits)))
        return np.arange(len(self))

    def _limit(self, key: str) -> float:
        """About ``max_batches`` batches of ``key``'s sentences in use (inf: no cap)."""
        if not self.max_batches or not (self.max_tokens or self.max_sentences):
            return float("inf")
        indices = self._ordered_indices[key]
        per_batch = float("inf")
        if self.max_tokens:
            probe = indices[:: max(1, len(indices) // 1000)]
            mean_tokens = np.mean([self.datasets[key].num_tokens(i) for i in probe])
            per_batch = max(1.0, self.max_tokens / max(mean_tokens, 1.0))
        if self.max_sentences:
            per_batch = min(per_batch, self.max_sentences)
        return max(1, int(self.max_batches * per_batch))

    def _draw(self, key: str, limit: int) -> np.ndarray:
        indices = self._ordered_indices[key]
        if len(indices) <= limit:
            return indices
        with data_utils.numpy_seed(self.seed, self.epoch_drawn, zlib.crc32(key.encode())):
            chosen = np.sort(np.random.choice(len(indices), limit, replace=False))
        return indices[chosen]  # a random draw, in the dataset's own (length) order

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        for dataset in self.epoch_aware:
            dataset.set_epoch(epoch)
