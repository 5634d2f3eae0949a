"""The knowledge_distillation criterion: the loss by hand on a tiny vocabulary, top-k,
selective distillation, the frozen teacher, and a training run through the CLI."""
import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from fairseq import checkpoint_utils
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationConfig, TranslationTask

import fairseq_smallcap  # noqa: F401  (registries, checkpoint loading)
from fairseq_smallcap.criterions.knowledge_distillation import (
    KnowledgeDistillationCriterion,
    KnowledgeDistillationError,
    load_teacher,
    select_hardest,
)
from fairseq_smallcap.errors import SmallcapError
from fairseq_smallcap.models.smallcap_transformer import DictionaryMismatchError

from conftest import TRAIN_FLAGS, run, tool

PAD = 1



class FixedLogits(torch.nn.Module):
    """A stand-in model whose output logits (batch, length, vocabulary) are fixed."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, **net_input):
        return self.logits, {"attn": None}

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return F.log_softmax(net_output[0].float(), -1) if log_probs else F.softmax(net_output[0].float(), -1)

    def get_targets(self, sample, net_output):
        return sample["target"]


def tiny_task():
    d = Dictionary()  # <s> <pad> </s> <unk>
    for symbol in "ab":
        d.add_symbol(symbol)
    return SimpleNamespace(target_dictionary=d, datasets={})  # 6 symbols


TARGET = torch.tensor([[4, 5, 4, 2], [5, 2, PAD, PAD]])


def logits(seed):
    return torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(seed)) * 2


def sample_of(target):
    return {"net_input": {}, "target": target, "ntokens": int(target.ne(PAD).sum()), "id": torch.arange(len(target))}


def criterion(teacher_logits, eps=0.1, **kwargs):
    return KnowledgeDistillationCriterion(tiny_task(), False, eps, teacher=FixedLogits(teacher_logits), **kwargs)


def tokens():
    """(sentence, position, gold) of every non-padding target token."""
    return [(b, t, int(TARGET[b, t])) for b in range(2) for t in range(4) if TARGET[b, t] != PAD]


def softmax(row, temperature=1.0):
    exps = [math.exp(x / temperature) for x in row]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def hand_ce(student, eps):
    total = 0.0
    for b, t, gold in tokens():
        logp = [math.log(p) for p in softmax(student[b, t].tolist())]
        eps_i = eps / (len(logp) - 1)
        total += (1 - eps - eps_i) * -logp[gold] + eps_i * -sum(logp)
    return total


def hand_kd(student, teacher, temperature=1.0, topk=0, only=None):
    total = 0.0
    for b, t, _ in tokens():
        if only is not None and (b, t) not in only:
            continue
        p = softmax(teacher[b, t].tolist(), temperature)
        q = softmax(student[b, t].tolist(), temperature)
        if topk:
            best = sorted(range(len(p)), key=lambda v: -p[v])[:topk]
            mass = sum(p[v] for v in best)
            p = [p[v] / mass if v in best else 0.0 for v in range(len(p))]
        total += kl(p, q)
    return total


def test_alpha_zero_is_label_smoothed_cross_entropy():
    student, teacher = logits(1), logits(2)
    loss, sample_size, log = criterion(teacher, kd_alpha=0.0)(FixedLogits(student), sample_of(TARGET))
    assert sample_size == log["ntokens"] == 6
    assert loss.item() == pytest.approx(hand_ce(student, 0.1), rel=1e-5)
    assert log["kd_loss"].item() == pytest.approx(hand_kd(student, teacher), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_alpha_one_is_t_squared_kl_over_non_padding_tokens(temperature):
    student, teacher = logits(3), logits(4)
    loss, _, log = criterion(teacher, kd_alpha=1.0, kd_temperature=temperature)(FixedLogits(student), sample_of(TARGET))
    kd = hand_kd(student, teacher, temperature)
    assert log["kd_loss"].item() == pytest.approx(kd, rel=1e-5)
    assert loss.item() == pytest.approx(temperature ** 2 * kd, rel=1e-5)
    assert log["kd_tokens"] == 6


def test_mixture_weights_both_terms():
    student, teacher = logits(5), logits(6)
    crit = criterion(teacher, eps=0.0, kd_alpha=0.3, kd_temperature=2.0)
    loss, _, log = crit(FixedLogits(student), sample_of(TARGET))
    expected = 0.7 * hand_ce(student, 0.0) + 0.3 * 4 * hand_kd(student, teacher, 2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert log["nll_loss"].item() == pytest.approx(hand_ce(student, 0.0), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_truncates_and_renormalizes_the_teacher(temperature):
    student, teacher = logits(7), logits(8)
    crit = criterion(teacher, kd_alpha=1.0, kd_topk=2, kd_temperature=temperature)
    _, _, log = crit(FixedLogits(student), sample_of(TARGET))
    assert log["kd_loss"].item() == pytest.approx(hand_kd(student, teacher, temperature, topk=2), rel=1e-5)
    assert log["kd_loss"].item() != pytest.approx(hand_kd(student, teacher, temperature), rel=1e-3)


def test_padding_is_excluded():
    student, teacher = logits(9), logits(10)
    crit = criterion(teacher, kd_alpha=0.5, kd_temperature=2.0)
    loss, _, log = crit(FixedLogits(student), sample_of(TARGET))
    changed_student, changed_teacher = student.clone(), teacher.clone()
    changed_student[1, 2:] += 100 * torch.randn(2, 6)
    changed_teacher[1, 2:] -= 100 * torch.randn(2, 6)
    loss2, _, log2 = criterion(changed_teacher, kd_alpha=0.5, kd_temperature=2.0)(FixedLogits(changed_student),
                                                                                 sample_of(TARGET))
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)
    assert log2["kd_loss"].item() == pytest.approx(log["kd_loss"].item(), rel=1e-6)
    # the batch is the sum of its sentences
    parts = [criterion(teacher[b:b + 1, :n], kd_alpha=0.5, kd_temperature=2.0)(
        FixedLogits(student[b:b + 1, :n]), sample_of(TARGET[b:b + 1, :n]))[0] for b, n in ((0, 4), (1, 2))]
    assert loss.item() == pytest.approx(sum(p.item() for p in parts), rel=1e-5)


def test_select_hardest_by_sentence_and_by_batch():
    hardness = torch.tensor([[0.1, 0.9, 0.5, 0.3], [2.0, 0.2, 7.0, 7.0]])
    candidates = torch.tensor([[True, True, True, True], [True, True, False, False]])
    word = select_hardest(hardness, candidates, 0.5, "word")
    assert word.tolist() == [[False, True, True, False], [True, False, False, False]]
    batch = select_hardest(hardness, candidates, 0.5, "batch")
    assert batch.tolist() == [[False, True, True, False], [True, False, False, False]]
    batch = select_hardest(hardness, candidates, 0.34, "batch")  # ceil(0.34 * 6) = 3
    assert batch.tolist() == [[False, True, True, False], [True, False, False, False]]
    batch = select_hardest(hardness, candidates, 0.3, "batch")  # ceil(1.8) = 2
    assert batch.tolist() == [[False, True, False, False], [True, False, False, False]]
    word = select_hardest(hardness, candidates, 0.25, "word")  # ceil(1), ceil(0.5): one each
    assert word.tolist() == [[False, True, False, False], [True, False, False, False]]
    assert select_hardest(hardness, candidates, 1.0, "word").equal(candidates)


@pytest.mark.parametrize("level", ["word", "batch"])
def test_selective_distillation_distils_the_hardest_tokens_and_keeps_ce_on_all(level):
    student, teacher = logits(11), logits(12)
    crit = criterion(teacher, kd_alpha=0.5, kd_selection=level, kd_selection_ratio=0.5)
    loss, _, log = crit(FixedLogits(student), sample_of(TARGET))
    hardness = {(b, t): -math.log(softmax(student[b, t].tolist())[gold]) for b, t, gold in tokens()}
    if level == "word":  # ceil(0.5 * 4) = 2 of sentence 0, ceil(0.5 * 2) = 1 of sentence 1
        chosen = set(sorted([k for k in hardness if k[0] == 0], key=hardness.get)[-2:])
        chosen |= set(sorted([k for k in hardness if k[0] == 1], key=hardness.get)[-1:])
    else:  # ceil(0.5 * 6) = 3 of the batch
        chosen = set(sorted(hardness, key=hardness.get)[-3:])
    assert log["kd_tokens"] == len(chosen) == 3
    kd = hand_kd(student, teacher, only=chosen)
    assert log["kd_loss"].item() == pytest.approx(kd, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * hand_ce(student, 0.1) + 0.5 * kd, rel=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs a teacher: --teacher-path CHECKPOINT or --teacher-topk-data DIR"),
    ({"teacher_path": "/no/such.pt"}, "--teacher-path /no/such.pt: no such checkpoint"),
    ({"teacher": "T", "kd_alpha": 1.5}, "--kd-alpha 1.5: must be in [0, 1]"),
    ({"teacher": "T", "kd_temperature": 0}, "--kd-temperature 0: must be positive"),
    ({"teacher": "T", "kd_topk": 99}, "--kd-topk 99: must be 0 (full distribution) or at most"),
    ({"teacher": "T", "kd_selection": "word", "kd_selection_ratio": 0},
     "--kd-selection-ratio 0: must be in (0, 1]"),
    ({"teacher": "T", "teacher_topk_data": "/x"}, "either --teacher-path or --teacher-topk-data"),
])
def test_bad_flags_are_clear_errors(kwargs, message):
    if kwargs.get("teacher") == "T":
        kwargs["teacher"] = FixedLogits(logits(0))
    with pytest.raises(KnowledgeDistillationError) as e:
        KnowledgeDistillationCriterion(tiny_task(), False, 0.1, **kwargs)
    assert message in str(e.value)


def test_teacher_is_frozen_not_a_submodule_and_follows_the_student():
    teacher = FixedLogits(logits(13))
    crit = KnowledgeDistillationCriterion(tiny_task(), False, 0.1, teacher=teacher)
    assert list(crit.parameters()) == [] and crit.state_dict() == {}
    assert not teacher.training and not teacher.logits.requires_grad
    crit.half()  # what fairseq's trainer does with --fp16: the teacher is not touched ...
    assert teacher.logits.dtype == torch.float32
    student = FixedLogits(logits(14)).half()
    assert crit._teacher_on(student).logits.dtype == torch.float16  # ... but follows at first use
    student = FixedLogits(logits(14))
    loss, _, _ = crit(student, sample_of(TARGET))
    loss.backward()
    assert teacher.logits.dtype == torch.float32 and teacher.logits.grad is None
    assert student.logits.grad is not None


def student_and_batch(tiny_data, ckpt, n=16):
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(ckpt)], arg_overrides={"data": str(tiny_data), "source_lang": "en", "target_lang": "fr"})
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    return models[0], task, dataset.collater([dataset[i] for i in range(n)])


def test_self_distillation_has_zero_kd_loss(tiny_data, trained_checkpoint):
    ckpt, _ = trained_checkpoint
    student, task, sample = student_and_batch(tiny_data, ckpt)
    crit = KnowledgeDistillationCriterion(task, False, 0.1, teacher_path=str(ckpt), kd_alpha=0.5, kd_temperature=2.0)
    assert crit.teacher is not student
    student.eval()
    loss, _, log = crit(student, sample)
    assert log["kd_tokens"] == sample["ntokens"]
    assert abs(log["kd_loss"].item()) < 1e-5 * sample["ntokens"]
    ce, _, _ = KnowledgeDistillationCriterion(task, False, 0.1, teacher_path=str(ckpt), kd_alpha=0.0)(student, sample)
    assert loss.item() == pytest.approx(0.5 * ce.item(), rel=1e-4)
    student.train()  # dropout: the student now differs from its teacher
    assert crit(student, sample)[2]["kd_loss"].item() > 1e-3


def test_teacher_with_another_dictionary_is_refused(tiny_data, trained_checkpoint):
    ckpt, _ = trained_checkpoint
    # the plain translation task: dict.en/fr.txt, without <mask> and the language tokens
    task = TranslationTask.setup_task(TranslationConfig(
        data=str(tiny_data), source_lang="en", target_lang="fr", dataset_impl="mmap", train_subset="train",
        required_seq_len_multiple=1))
    with pytest.raises(DictionaryMismatchError) as e:
        load_teacher(str(ckpt), task)
    size = len(task.target_dictionary)
    assert isinstance(e.value, SmallcapError)
    assert f"has {size + 3} symbols but the task's target dictionary has {size}" in str(e.value)
    assert str(ckpt) in str(e.value)


def kd_flags(*extra):
    flags = list(TRAIN_FLAGS)
    flags[flags.index("--criterion") + 1] = "knowledge_distillation"
    return [*flags, *extra]


def test_cli_unsupervised_training_with_a_teacher(tiny_data, trained_checkpoint, tmp_path):
    ckpt, _ = trained_checkpoint
    result = run([tool("fairseq-train"), tiny_data, *kd_flags(
        "--teacher-path", ckpt, "--kd-alpha", "0.5", "--kd-temperature", "2", "--lambda-dae", "1",
        "--lambda-bt", "1", "--max-update", "2", "--save-dir", tmp_path)])
    train_lines = [line for line in result.stdout.splitlines() if "train_inner" in line]
    assert len(train_lines) == 2 and all("kd_loss=" in line and "bt_loss=" in line for line in train_lines)
    valid = [line for line in result.stdout.splitlines() if "valid on 'valid' subset" in line]
    assert valid and "kd_loss" in valid[-1]  # the teacher also scores the validation batches
    kd = [float(v) for v in re.findall(r"kd_loss=([\d.]+)", result.stdout)]
    assert all(v >= 0 for v in kd)
    # the student's checkpoint holds the student only
    student = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    teacher = torch.load(ckpt, weights_only=True)
    assert set(student["model"]) == set(teacher["model"])
    assert student.get("criterion") is None
