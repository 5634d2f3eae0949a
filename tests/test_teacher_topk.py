"""Offline teacher: smallcap-teacher-topk writes a teacher's top-k distributions, the
knowledge_distillation criterion reads them (--teacher-topk-data) and checks they match."""
import json
import shutil

import pytest
import torch
from fairseq import tasks
from fairseq.tasks.translation import TranslationConfig, TranslationTask

import fairseq_smallcap  # noqa: F401
from fairseq_smallcap.criterions.knowledge_distillation import (
    KnowledgeDistillationCriterion,
    KnowledgeDistillationError,
    load_teacher,
)
from fairseq_smallcap.distillation.topk_store import TopKDataError, TopKStore, target_lengths_and_checksum
from fairseq_smallcap.tasks.unsupervised_translation import UnsupervisedTranslationConfig

from conftest import TRAIN_FLAGS, USER_DIR, run, tool

K = 8



def translation_flags(*extra):
    """TRAIN_FLAGS for fairseq's plain translation task, trained on the 1,000 test pairs."""
    flags = list(TRAIN_FLAGS)
    flags[flags.index("unsupervised_translation")] = "translation"
    i = flags.index("--bt-show-samples-interval")
    del flags[i:i + 2]
    return [*flags, "-s", "en", "-t", "fr", "--train-subset", "test", "--valid-subset", "valid", *extra]


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory):
    """A checkpoint of the translation task (dictionary dict.fr.txt) after 2 updates."""
    save_dir = tmp_path_factory.mktemp("translation_teacher")
    run([tool("fairseq-train"), tiny_data, *translation_flags("--max-update", "2", "--save-dir", save_dir,
                                                             "--disable-validation")])
    return save_dir / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def topk_dir(tiny_data, teacher, tmp_path_factory):
    dest = tmp_path_factory.mktemp("topk")
    result = run([tool("smallcap-teacher-topk"), tiny_data, "--user-dir", USER_DIR, "--path", teacher,
                  "--task", "translation", "-s", "en", "-t", "fr", "--subset", "test", "--topk", K,
                  "--dest", dest, "--max-tokens", "2000", "--cpu"])
    assert "1,000/1,000 sentences" in result.stdout and not list(dest.glob("*.partial"))
    return dest


def translation_task(tiny_data):
    return TranslationTask.setup_task(TranslationConfig(
        data=str(tiny_data), source_lang="en", target_lang="fr", dataset_impl="mmap", train_subset="train",
        required_seq_len_multiple=1))


@pytest.fixture(scope="module")
def task(tiny_data):
    task = translation_task(tiny_data)
    task.load_dataset("test")
    task.load_dataset("valid")
    return task


def test_meta_describes_the_data(task, topk_dir):
    meta = json.loads((topk_dir / "test" / "meta.json").read_text())
    lengths, checksum = target_lengths_and_checksum(task.dataset("test"))
    assert meta["k"] == K and meta["subset"] == "test" and meta["sentences"] == 1000
    assert meta["tokens"] == lengths.sum() and meta["target_checksum"] == checksum
    assert meta["dictionary_size"] == len(task.target_dictionary) and meta["unscored_sentences"] == 0
    store = TopKStore(str(topk_dir / "test"))
    assert store.ids.dtype == "int32" and store.logprobs.dtype == "float16" and store.offsets.dtype == "int64"
    assert store.ids.shape == (lengths.sum(), K)


def test_checksum_reads_the_binary_file_like_the_dataset(task):
    for subset in ("test", "valid"):
        fast = target_lengths_and_checksum(task.dataset(subset))
        slow = target_lengths_and_checksum(task.dataset(subset), fast=False)
        assert fast[1] == slow[1] and (fast[0] == slow[0]).all()


def test_round_trip_equals_the_teachers_topk(task, teacher, topk_dir):
    model = load_teacher(str(teacher), task)
    store = TopKStore(str(topk_dir / "test"))
    store.check_dataset(task.dataset("test"))
    dataset = task.dataset("test")
    sample = dataset.collater([dataset[i] for i in (0, 7, 123, 999, 500)])
    ids, logprobs = store.lookup(sample["id"], sample["target"], task.target_dictionary.pad())
    with torch.no_grad():
        full = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
    values, expected_ids = full.topk(K, dim=-1)
    tokens = sample["target"].ne(task.target_dictionary.pad())
    assert int(tokens.sum()) == sample["ntokens"]
    assert ids[tokens].eq(expected_ids[tokens]).all()
    assert torch.allclose(logprobs[tokens], values[tokens], atol=5e-3)  # float16
    assert ids[~tokens].eq(-1).all()  # padding: no teacher data


def test_offline_loss_equals_the_online_teacher_truncated_to_k(task, teacher, topk_dir):
    model = load_teacher(str(teacher), task)
    dataset = task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(12)])
    online = KnowledgeDistillationCriterion(task, False, 0.1, teacher_path=str(teacher), kd_topk=K,
                                            kd_temperature=2.0)
    offline = KnowledgeDistillationCriterion(task, False, 0.1, teacher_topk_data=str(topk_dir), kd_temperature=2.0,
                                             train_subset="test", valid_subset="valid")
    model.train()  # the student (here: a trained copy of the teacher, with dropout) in training
    torch.manual_seed(0)
    net_output = model(**sample["net_input"])
    a = online.compute_kd_loss(model, net_output, sample)
    b = offline.compute_kd_loss(model, net_output, sample)
    assert a[3] == b[3] == sample["ntokens"]
    assert b[2].item() == pytest.approx(a[2].item(), rel=1e-2)
    assert b[0].item() == pytest.approx(a[0].item(), rel=1e-3)
    # validation: no data for 'valid', so no KD term: the loss is the label-smoothed CE
    model.eval()
    loss, _, log = offline(model, sample)
    assert "kd_loss" not in log
    ce, _, _ = KnowledgeDistillationCriterion(task, False, 0.1, teacher_path=str(teacher), kd_alpha=0.0)(model, sample)
    assert loss.item() == pytest.approx(ce.item(), rel=1e-5)
    # ... and with data for the validation subset, the KD term is there
    both = KnowledgeDistillationCriterion(task, False, 0.1, teacher_topk_data=str(topk_dir),
                                          train_subset="test", valid_subset="test")
    assert both(model, sample)[2]["kd_tokens"] == sample["ntokens"]


def test_mismatched_data_is_a_clear_error(task, topk_dir, tmp_path):
    store = TopKStore(str(topk_dir / "test"))
    with pytest.raises(TopKDataError, match="data for 1000 sentences but the test dataset has 1014"):
        store.check_dataset(task.dataset("valid"))
    size = len(task.target_dictionary)
    with pytest.raises(TopKDataError, match=f"made with a {size}-symbol dictionary but the task's target "
                       f"dictionary has {size + 3}"):
        store.check_dictionary(size + 3)
    copy = tmp_path / "test"
    shutil.copytree(topk_dir / "test", copy)
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "target_checksum": "0" * 40}))
    with pytest.raises(TopKDataError, match="checksum mismatch"):
        TopKStore(str(copy)).check_dataset(task.dataset("test"))
    sample = task.dataset("test").collater([task.dataset("test")[0]])
    with pytest.raises(TopKDataError, match="sentence 0 has 3 target tokens but the teacher top-k data has"):
        store.lookup(sample["id"], sample["target"][:, :3], task.target_dictionary.pad())
    # the criterion checks the dataset it trains on before the first batch
    crit = KnowledgeDistillationCriterion(task, False, 0.1, teacher_topk_data=str(tmp_path), train_subset="test")
    model = load_teacher(meta["teacher"], task).train()
    with pytest.raises(TopKDataError, match="checksum mismatch"):
        crit(model, sample)


def test_criterion_refuses_unusable_topk_data(tiny_data, topk_dir):
    with pytest.raises(KnowledgeDistillationError, match="no data for the training subset 'train' \\(found: test\\)"):
        KnowledgeDistillationCriterion(translation_task(tiny_data), False, 0.1, teacher_topk_data=str(topk_dir))
    with pytest.raises(KnowledgeDistillationError, match="holds only the top 8 tokens"):
        KnowledgeDistillationCriterion(translation_task(tiny_data), False, 0.1, teacher_topk_data=str(topk_dir),
                                       train_subset="test", kd_topk=9)
    cfg = UnsupervisedTranslationConfig(data=str(tiny_data), dataset_impl="mmap", seed=1, train_subset="train",
                                        required_seq_len_multiple=1)
    unsupervised = tasks.TASK_REGISTRY["unsupervised_translation"].setup_task(cfg)
    with pytest.raises(KnowledgeDistillationError, match="does not work with --task unsupervised_translation"):
        KnowledgeDistillationCriterion(unsupervised, False, 0.1, teacher_topk_data=str(topk_dir), train_subset="test")
    with pytest.raises(TopKDataError, match="no such directory"):
        KnowledgeDistillationCriterion(translation_task(tiny_data), False, 0.1, teacher_topk_data="/no/such/dir")


def test_cli_translation_training_with_stored_topk(tiny_data, topk_dir, tmp_path):
    result = run([tool("fairseq-train"), tiny_data, *translation_flags(
        "--criterion", "knowledge_distillation", "--teacher-topk-data", topk_dir, "--kd-alpha", "0.5",
        "--kd-temperature", "2", "--kd-topk", "4", "--kd-selection", "word", "--max-update", "2",
        "--save-dir", tmp_path)])
    train_lines = [line for line in result.stdout.splitlines() if "train_inner" in line]
    assert len(train_lines) == 2 and all("kd_loss=" in line for line in train_lines)
    valid = [line for line in result.stdout.splitlines() if "valid on 'valid' subset" in line]
    assert valid and "kd_loss" not in valid[-1]  # no stored data for 'valid': CE only
    assert "no data for the validation subset 'valid'" in result.stdout


def test_cli_translation_training_with_an_online_teacher(tiny_data, teacher, tmp_path):
    """fairseq's plain translation task, the teacher run on every batch (training and validation)."""
    result = run([tool("fairseq-train"), tiny_data, *translation_flags(
        "--criterion", "knowledge_distillation", "--teacher-path", teacher, "--kd-alpha", "0.5",
        "--kd-topk", "8", "--max-update", "2", "--save-dir", tmp_path)])
    train_lines = [line for line in result.stdout.splitlines() if "train_inner" in line]
    assert len(train_lines) == 2 and all("kd_loss=" in line for line in train_lines)
    valid = [line for line in result.stdout.splitlines() if "valid on 'valid' subset" in line]
    assert valid and "kd_loss" in valid[-1]


def test_cli_teacher_with_another_dictionary(tiny_data, task, teacher, tmp_path):
    """A translation-task teacher for an unsupervised_translation student (whose dictionary also
    has <mask> and two language tokens)."""
    flags = list(TRAIN_FLAGS)
    flags[flags.index("--criterion") + 1] = "knowledge_distillation"
    result = run([tool("fairseq-train"), tiny_data, *flags, "--teacher-path", teacher, "--max-update", "1",
                  "--save-dir", tmp_path], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    size = len(task.target_dictionary)
    assert f"--teacher-path {teacher}: the teacher's output vocabulary has {size} symbols but the task's " \
           f"target dictionary has {size + 3}" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--path", "MISSING"], "--path MISSING: no such checkpoint"),
    (["--path", "TEACHER", "--task", "unsupervised_translation"],
     "--task unsupervised_translation: its samples change"),
    (["--path", "TEACHER", "--subset", "nope"], "--subset nope: "),
])
def test_cli_errors_are_one_line(tiny_data, teacher, tmp_path, args, message):
    args = [str(teacher) if a == "TEACHER" else a for a in args]
    result = run([tool("smallcap-teacher-topk"), tiny_data, "--user-dir", USER_DIR, "-s", "en", "-t", "fr",
                  "--dest", tmp_path, "--cpu", *args], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"smallcap-teacher-topk: error: {message}" in result.stderr
