"""Word-level knowledge distillation: the ``knowledge_distillation`` criterion.

The student learns from the gold tokens and from a frozen teacher's next-token distributions
(Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"; word-level KD for NMT as in
Kim & Rush 2016, "Sequence-Level Knowledge Distillation", EMNLP 2016)::

    loss = (1 - alpha) * label-smoothed CE + alpha * T^2 * KL(teacher_T || student_T)

summed over the target tokens (padding excluded), with the sum / sample_size convention of
``label_smoothed_cross_entropy``, so fairseq normalizes it unchanged. ``teacher_T`` and
``student_T`` are the distributions at temperature T (softmax of logits / T); T^2 keeps the
gradient scale of the KD term independent of T.

* ``--kd-topk k``: the teacher distribution truncated to its k most likely tokens and
  renormalized; the KL sums over those k tokens only (the student's probabilities there are
  those of its full distribution).
* ``--kd-selection word|batch`` with ``--kd-selection-ratio r``: selective distillation (Wang et
  al. 2021, "Selective Knowledge Distillation for Neural Machine Translation", ACL 2021): the KD
  term covers only the ceil(r * n) hardest of n target tokens, hardness being the student's
  cross-entropy on the gold token, chosen within each sentence (``word``) or within the whole
  batch (``batch``). The CE term always covers every token.

The teacher is either a checkpoint (``--teacher-path``), run on the very batches the student
sees (in ``unsupervised_translation``: the MASS, DAE, back-translation and back-parallel batches,
after back-translation), or its top-k distributions precomputed by ``smallcap-teacher-topk``
(``--teacher-topk-data``; tasks whose samples are fixed, such as ``translation``). Teacher and
student may differ in size but must share the target dictionary. The teacher is frozen, in eval
mode, and not a sub-module of the criterion: it is neither saved in the student's checkpoints
nor seen by the optimizer; it follows the student's device and dtype. Offline data is looked up
by ``sample["id"]`` and target position: in training (model in train mode) from the
``--train-subset`` data, in validation from the ``--valid-subset`` data; before the first batch
of a subset it is checked against the dataset (sentence count, target lengths, token checksum).
Tokens that the teacher could not score (sentences longer than its maximum positions) are left
out of the KD term.

Validation: the loss is the training objective wherever the teacher's distributions are at
hand: always with ``--teacher-path`` (the teacher scores the validation batches), and with
``--teacher-topk-data`` when DIR holds data for the validation subset (one ``--valid-subset``).
Otherwise (offline data without that subset) the KD term is left out: the validation loss is the
label-smoothed CE alone (not scaled by 1 - alpha) and ``kd_loss`` is not logged.
``nll_loss`` is always the student's CE on the gold tokens, comparable with runs without KD.

Logged: ``loss``, ``nll_loss`` and ``kd_loss`` (the KL at temperature T, without alpha * T^2, per
distilled token), all in bits, plus ``kd_tokens`` (tokens distilled), ``ntokens``, ``sample_size``.
"""
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq import checkpoint_utils, utils
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
    label_smoothed_nll_loss,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from omegaconf import II

from .. import clean_exit
from ..errors import DictionaryMismatchError, SmallcapError, reported

logger = logging.getLogger(__name__)

SELECTIONS = ("none", "word", "batch")


class KnowledgeDistillationError(SmallcapError, ValueError):
    """Bad teacher checkpoint, teacher data or KD flag."""


@dataclass
class KnowledgeDistillationConfig(LabelSmoothedCrossEntropyCriterionConfig):
    teacher_path: Optional[str] = field(
        default=None,
        metadata={"help": "teacher checkpoint (fairseq), run on every batch the student sees; it "
                  "may be larger or smaller than the student but must share its dictionary"},
    )
    teacher_topk_data: Optional[str] = field(
        default=None,
        metadata={"help": "directory of teacher top-k distributions written by smallcap-teacher-topk, "
                  "read instead of running a teacher (tasks with fixed samples, e.g. translation)"},
    )
    kd_alpha: float = field(
        default=0.5, metadata={"help": "weight of the KD term: (1 - alpha) * CE + alpha * T^2 * KL"}
    )
    kd_temperature: float = field(
        default=1.0, metadata={"help": "softmax temperature T of teacher and student in the KD term"}
    )
    kd_topk: int = field(
        default=0,
        metadata={"help": "distil the teacher distribution truncated to its k most likely tokens and "
                  "renormalized (0: the full distribution; with --teacher-topk-data, 0: all stored)"},
    )
    kd_selection: ChoiceEnum(SELECTIONS) = field(
        default="none",
        metadata={"help": "selective distillation (Wang et al. 2021): distil only the hardest "
                  "--kd-selection-ratio of the target tokens (by the student's CE on the gold "
                  "token) within each sentence (word) or the whole batch (batch)"},
    )
    kd_selection_ratio: float = field(
        default=0.5, metadata={"help": "fraction of the target tokens distilled with --kd-selection"}
    )
    train_subset: str = II("dataset.train_subset")
    valid_subset: str = II("dataset.valid_subset")


def load_teacher(path: Optional[str], task, flag: str = "--teacher-path"):
    """The frozen teacher of checkpoint ``path``, built with ``task`` (so that it uses the task's
    dictionary and language tokens), on CPU, in eval mode."""
    from fairseq.tasks import FairseqTask

    if not path or not os.path.isfile(path):
        raise KnowledgeDistillationError(f"{flag} {path}: no such checkpoint")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    found, expected = output_vocabulary_size(state["model"]), len(task.target_dictionary)
    if found is not None and found != expected:
        raise DictionaryMismatchError(
            f"{flag} {path}: the teacher's output vocabulary has {found} symbols but the task's target "
            f"dictionary has {expected}; teacher and student must share the dictionary (same data "
            "directory, task and --mono-langs)")
    if state.get("args") is not None:
        from fairseq.dataclass.utils import convert_namespace_to_omegaconf

        cfg = convert_namespace_to_omegaconf(state["args"])
    else:
        cfg = state["cfg"]
    # FairseqTask.build_model, not task.build_model: TranslationTask.build_model would make the
    # teacher the model of the task's --eval-bleu sequence generator.
    teacher = FairseqTask.build_model(task, cfg.model, from_checkpoint=True)
    teacher.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    teacher.eval()
    teacher.requires_grad_(False)
    logger.info(f"teacher {path}: {sum(p.numel() for p in teacher.parameters()):,} parameters")
    return teacher


def output_vocabulary_size(state_dict) -> Optional[int]:
    """Rows of the decoder's output projection (or embedding) in a model state dict."""
    for key in ("decoder.output_projection.weight", "decoder.embed_out", "decoder.embed_tokens.weight"):
        if key in state_dict:
            return state_dict[key].size(0)
    return None


def distillation_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor,
                    teacher_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-token KL(teacher || student) over the last dimension. ``teacher_logp`` is a full
    distribution, or (with ``teacher_ids``) one over those token ids only."""
    if teacher_ids is not None:
        student_logp = student_logp.gather(-1, teacher_ids)
    teacher_p = teacher_logp.exp()
    kl = torch.where(teacher_p > 0, teacher_p * (teacher_logp - student_logp), torch.zeros_like(teacher_p))
    return kl.sum(-1)


def select_hardest(hardness: torch.Tensor, candidates: torch.Tensor, ratio: float, level: str) -> torch.Tensor:
    """The ceil(ratio * n) candidates of highest ``hardness`` among the n candidates of each
    sentence (``word``) or of the whole batch (``batch``), as a mask like ``candidates``."""
    score = hardness.detach().float().masked_fill(~candidates, float("-inf"))
    if level == "batch":
        k = math.ceil(ratio * int(candidates.sum()) - 1e-9)
        chosen = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
        chosen[score.view(-1).topk(k).indices] = True
        return chosen.view_as(candidates) & candidates
    k = torch.ceil(candidates.sum(-1).double() * ratio - 1e-9).long()
    rank = score.argsort(dim=-1, descending=True, stable=True).argsort(dim=-1)
    return (rank < k.unsqueeze(-1)) & candidates


@register_criterion("knowledge_distillation", dataclass=KnowledgeDistillationConfig)
class KnowledgeDistillationCriterion(LabelSmoothedCrossEntropyCriterion):
    """(1 - alpha) * label-smoothed CE + alpha * T^2 * KL(teacher_T || student_T); see the module
    docstring. ``teacher`` (programmatic use) is an already built teacher model."""

    @reported
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 teacher_path=None, teacher_topk_data=None, kd_alpha=0.5, kd_temperature=1.0, kd_topk=0,
                 kd_selection="none", kd_selection_ratio=0.5, train_subset="train", valid_subset="valid",
                 teacher=None):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        clean_exit.install()  # with fairseq's own tasks too: a run stopped mid-epoch exits 0
        self.alpha, self.temperature, self.topk = kd_alpha, kd_temperature, kd_topk
        self.selection, self.selection_ratio = str(kd_selection), kd_selection_ratio
        self._check_flags(teacher_path, teacher_topk_data, teacher)
        self.train_subset = train_subset
        valid_subsets = [s for s in str(valid_subset).split(",") if s]
        self.valid_subset = valid_subsets[0] if len(valid_subsets) == 1 else None
        self.stores, self._checked_datasets = {}, {}
        if teacher_topk_data:
            self._open_topk_data(task, teacher_topk_data)
        elif teacher is None:
            teacher = load_teacher(teacher_path, task)
        # a plain attribute, not a registered sub-module: not saved, not optimized, not moved by
        # criterion.to()/.half() (see _teacher_on)
        object.__setattr__(self, "teacher", teacher)
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)

    def _check_flags(self, teacher_path, teacher_topk_data, teacher) -> None:
        if teacher_topk_data and (teacher_path or teacher is not None):
            raise KnowledgeDistillationError("give either --teacher-path or --teacher-topk-data, not both")
        if not teacher_topk_data and not teacher_path and teacher is None:
            raise KnowledgeDistillationError(
                "--criterion knowledge_distillation needs a teacher: --teacher-path CHECKPOINT or "
                "--teacher-topk-data DIR (from smallcap-teacher-topk)")
        if not 0 <= self.alpha <= 1:
            raise KnowledgeDistillationError(f"--kd-alpha {self.alpha}: must be in [0, 1]")
        if not self.temperature > 0:
            raise KnowledgeDistillationError(f"--kd-temperature {self.temperature}: must be positive")
        if self.topk < 0 or (self.topk and self.topk > len(self.task.target_dictionary)):
            raise KnowledgeDistillationError(
                f"--kd-topk {self.topk}: must be 0 (full distribution) or at most the dictionary size "
                f"{len(self.task.target_dictionary)}")
        if self.selection not in SELECTIONS:
            raise KnowledgeDistillationError(
                f"--kd-selection {self.selection}: expected one of {', '.join(SELECTIONS)}")
        if self.selection != "none" and not 0 < self.selection_ratio <= 1:
            raise KnowledgeDistillationError(f"--kd-selection-ratio {self.selection_ratio}: must be in (0, 1]")

    def _open_topk_data(self, task, directory: str) -> None:
        from ..distillation.topk_store import open_stores

        if not getattr(task, "stable_sample_ids", True):
            raise KnowledgeDistillationError(
                "--teacher-topk-data does not work with --task unsupervised_translation: noise and "
                "back-translation give a sample id another source at every step; use --teacher-path")
        self.stores = open_stores(directory)
        for store in self.stores.values():
            store.check_dictionary(len(task.target_dictionary))
            if self.topk > store.k:
                raise KnowledgeDistillationError(
                    f"--kd-topk {self.topk}: {store.path} holds only the top {store.k} tokens")
        if self.train_subset not in self.stores:
            raise KnowledgeDistillationError(
                f"--teacher-topk-data {directory}: no data for the training subset {self.train_subset!r} "
                f"(found: {', '.join(self.stores)}); run smallcap-teacher-topk --subset {self.train_subset}")
        if self.valid_subset not in self.stores:
            if self.valid_subset is None:
                why = "several validation subsets"
            else:
                why = f"no data for the validation subset {self.valid_subset!r}"
            logger.info(f"--teacher-topk-data {directory}: {why}: validation without the KD term")

    # ------------------------------------------------------------------ teacher distributions
    def _teacher_on(self, model):
        """The teacher, moved to the student's device and floating-point dtype if needed."""
        student, teacher = next(model.parameters()), next(self.teacher.parameters())
        if teacher.device != student.device or teacher.dtype != student.dtype:
            self.teacher.to(device=student.device, dtype=student.dtype)
        return self.teacher

    def teacher_distribution(self, model, sample, target):
        """Teacher log-probabilities at temperature 1 over the full dictionary, or over its
        top-k tokens (then also their ids), shaped like the target plus one dimension, with the
        mask of the target positions that have teacher data; None if there is none (offline
        data without this subset)."""
        if self.teacher is not None:
            teacher = self._teacher_on(model)
            with torch.no_grad():
                logp = teacher.get_normalized_probs(teacher(**sample["net_input"]), log_probs=True).float()
            if logp.size(-1) != len(self.task.target_dictionary):
                raise DictionaryMismatchError(
                    f"the teacher's output vocabulary has {logp.size(-1)} symbols but the task's target "
                    f"dictionary has {len(self.task.target_dictionary)}")
            ids = None
            if self.topk:
                logp, ids = logp.topk(self.topk, dim=-1)
            return logp, ids, torch.ones_like(target, dtype=torch.bool)
        store = self._store_for(model)
        if store is None:
            return None
        ids, logp = store.lookup(sample["id"], target, self.padding_idx)
        if self.topk:
            ids, logp = ids[..., : self.topk], logp[..., : self.topk]
        available = ids[..., 0].ge(0).to(target.device)
        return logp.to(target.device), ids.clamp(min=0).to(target.device), available

    def _store_for(self, model):
        subset = self.train_subset if model.training else self.valid_subset
        store = self.stores.get(subset)
        dataset = self.task.datasets.get(subset) if store is not None else None
        if dataset is not None and self._checked_datasets.get(subset) is not dataset:
            store.check_dataset(dataset)
            self._checked_datasets[subset] = dataset
        return store

    # ------------------------------------------------------------------ loss
    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        loss, nll_loss, kd_loss, kd_tokens = self.compute_kd_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }
        if kd_loss is not None:
            logging_output["kd_loss"] = kd_loss.data
            logging_output["kd_tokens"] = kd_tokens
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        return loss, sample_size, logging_output

    def compute_kd_loss(self, model, net_output, sample, reduce=True):
        """(loss, nll_loss, kd_loss or None, number of distilled tokens): sums over the target
        tokens, or (not ``reduce``) values per target position after ``--ignore-prefix-size``."""
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        counted = target.ne(self.padding_idx)
        counted[:, : self.ignore_prefix_size] = False
        ce, nll = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1), self.eps,
                                          ignore_index=self.padding_idx, reduce=False)
        ce, nll = ce.view(target.shape) * counted, nll.view(target.shape) * counted
        loss, kd, kd_tokens = ce, None, 0
        teacher = self.teacher_distribution(model, sample, target)
        if teacher is not None:
            teacher_logp, teacher_ids, available = teacher
            if self.temperature == 1:
                student_logp = lprobs
            else:
                scaled = (net_output[0] / self.temperature, *net_output[1:])
                student_logp = model.get_normalized_probs(scaled, log_probs=True)
            teacher_logp = F.log_softmax(teacher_logp / self.temperature, dim=-1)  # renormalizes a top-k
            distilled = counted & available
            if self.selection != "none":
                distilled = select_hardest(nll, distilled, self.selection_ratio, self.selection)
            kd = distillation_kl(student_logp, teacher_logp, teacher_ids)
            kd = torch.where(distilled, kd, torch.zeros_like(kd))
            kd_tokens = int(distilled.sum())
            loss = (1 - self.alpha) * ce + self.alpha * self.temperature ** 2 * kd
        if reduce:
            return loss.sum(), nll.sum(), None if kd is None else kd.sum(), kd_tokens
        flat = lambda t: None if t is None else t[:, self.ignore_prefix_size:].reshape(-1)  # noqa: E731
        return flat(loss), flat(nll), flat(kd), kd_tokens

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        kd_tokens = sum(log.get("kd_tokens", 0) for log in logging_outputs)
        if kd_tokens:
            kd_sum = sum(log.get("kd_loss", 0) for log in logging_outputs)
            metrics.log_scalar("kd_loss", kd_sum / kd_tokens / math.log(2), kd_tokens, round=3)
            metrics.log_scalar("kd_tokens", kd_tokens, round=0)
