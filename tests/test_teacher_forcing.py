"""Teacher forcing on the task's own batches, for every objective the task trains.

The invariant (independent of how each dataset builds its samples): the decoder input at a
position that is predicted is the token before it, ``prev_output_tokens[j] == target[j-1]``,
the first decoder token is the target language's token, and the tokens predicted are those of
the real sentence at the positions the encoder holds them. The batches come from the task's
own batch iterator and reach the criterion through ``task.train_step`` (after back-translation,
with the label-smoothed and the knowledge-distillation criterion), so a misalignment anywhere on
that path fails here. MASS before the fix fed ``x[j-2]``: the checker is run on such batches
too (``--mass-legacy-shift``) and must reject them.
"""
from collections import Counter

import pytest
import torch
from fairseq import options, tasks
from fairseq.data import data_utils
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from conftest import TRAIN_FLAGS, run, tool


class Backward:
    """The one optimizer method ``train_step`` calls."""

    def backward(self, loss):
        loss.backward()


class Recording:
    """The real criterion, recording every batch it is given."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, model, sample, reduce=True):
        self.batches.append(sample)
        return self.inner(model, sample)


def build(data, *flags, base=TRAIN_FLAGS):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), *base, *map(str, flags)])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return task, task.build_model(cfg.model), task.build_criterion(cfg.criterion)


def monolingual(task, data, lang):
    return data_utils.load_indexed_dataset(str(data / lang / "train"), task.dictionary, "mmap")


def check_teacher_forcing(task, key, batch, mono):
    """Assert the invariant on one collated batch of objective ``key`` (``en-MASS`` ...)."""
    pad = task.dictionary.pad()
    lang, objective = key.split("-")
    prev, target = batch["net_input"]["prev_output_tokens"], batch["target"]
    assert prev.shape == target.shape, key
    checked = 0
    for row, sentence_id in enumerate(batch["id"].tolist()):
        tgt_lang = lang[-2:] if objective == "BP" else lang  # BP keys are "{src}{tgt}-BP"
        assert prev[row, 0] == task.lang_idx[tgt_lang], f"{key}: decoder must start with __{tgt_lang}__"
        real = target[row].ne(pad)
        if objective == "MASS":
            # the clean encoder input is [__lang__] x; the decoder predicts x[j] where the encoder holds it
            clean = torch.cat([prev.new([task.lang_idx[lang]]), mono[sentence_id]])
            span = real.nonzero().view(-1)
            assert len(span) > 0 and int(span[0]) >= 1, key
            assert torch.equal(target[row, span], clean[span]), f"{key}: span tokens at the wrong positions"
            source = batch["net_input"]["src_tokens"][row]
            source = source[source.ne(pad)]
            assert len(source) == len(clean)
            outside = torch.ones(len(clean), dtype=torch.bool)
            outside[span] = False
            assert torch.equal(source[outside], clean[outside]), f"{key}: encoder input changed outside the span"
            expected_prev = clean[span - 1]
        else:
            if objective in ("DAE", "BT"):
                assert torch.equal(target[row][real], mono[sentence_id]), f"{key}: target is not the sentence"
            positions = real.nonzero().view(-1)
            assert int(positions[0]) == 0 and bool(real[: len(positions)].all()), f"{key}: target not left-aligned"
            span = positions[1:]
            expected_prev = target[row, span - 1]
        assert torch.equal(prev[row, span], expected_prev), (
            f"{key}: decoder input is not the previous token: {prev[row, span].tolist()} != "
            f"{expected_prev.tolist()}")
        checked += len(span)
    return checked


def train_batches(task, model, criterion, n_samples=3):
    """Each objective's batches as the criterion receives them from ``task.train_step``."""
    task.load_dataset("train")
    iterator = task.get_batch_iterator(task.dataset("train"), max_tokens=600, seed=1, epoch=1)
    recording = Recording(criterion)
    seen = []
    for i, sample in enumerate(iterator.next_epoch_itr(shuffle=True)):
        if i == n_samples:
            break
        for key, batch in sample.items():
            if not batch:
                continue
            before = len(recording.batches)
            task.train_step({key: batch}, model, recording, Backward(), update_num=i)
            assert len(recording.batches) == before + 1, key
            seen.append((key, recording.batches[-1]))
    return seen


@pytest.fixture(scope="module")
def back_parallel(tiny_data, trained_checkpoint, tmp_path_factory):
    checkpoint, _ = trained_checkpoint
    dest = tmp_path_factory.mktemp("bp")
    run([tool("smallcap-back-parallel"), tiny_data, "--path", checkpoint, "--dest", dest,
         "--max-sentences", "40", "--keep", "0.5", "--cpu"])
    return dest


ALL_OBJECTIVES = ["--lambda-mass", "1", "--lambda-dae", "1", "--lambda-bt", "1", "--lambda-bp", "1"]


@pytest.mark.parametrize("criterion", ["label_smoothed_cross_entropy", "knowledge_distillation"])
def test_every_objective_is_teacher_forced(tiny_data, trained_checkpoint, back_parallel, criterion):
    flags = [*ALL_OBJECTIVES, "--back-parallel-data", back_parallel, "--criterion", criterion]
    if criterion == "knowledge_distillation":
        flags += ["--teacher-path", trained_checkpoint[0], "--kd-alpha", "0.5"]
    task, model, crit = build(tiny_data, *flags)
    mono = {lang: monolingual(task, tiny_data, lang) for lang in task.langs}
    seen = train_batches(task, model, crit)
    keys = {key for key, _ in seen}
    assert keys == {f"{lang}-{obj}" for lang in ("en", "fr") for obj in ("MASS", "DAE", "BT")} | {"enfr-BP", "fren-BP"}
    for key, batch in seen:
        lang = key.split("-")[0]
        assert check_teacher_forcing(task, key, batch, mono.get(lang)) > 0, key
        if key.endswith("-BT"):  # the encoder reads the model's translation, in the other language
            other = task.other_lang(lang)
            sources = batch["net_input"]["src_tokens"]
            first = [row[row.ne(task.dictionary.pad())][0] for row in sources]
            assert all(int(t) == task.lang_idx[other] for t in first)


def test_recurrent_student_gets_the_same_batches(tiny_data):
    base = list(TRAIN_FLAGS)
    for flag in ("--encoder-ffn-embed-dim", "--decoder-ffn-embed-dim", "--decoder-layers"):
        del base[base.index(flag): base.index(flag) + 2]  # Transformer-only flags
    task, model, crit = build(tiny_data, "--lambda-mass", "1", "--lambda-dae", "1", "--lambda-bt", "1",
                              "--arch", "smallcap_bigru", base=base)
    mono = {lang: monolingual(task, tiny_data, lang) for lang in task.langs}
    for key, batch in train_batches(task, model, crit, n_samples=2):
        assert check_teacher_forcing(task, key, batch, mono[key.split("-")[0]]) > 0, key


def test_the_checker_rejects_the_old_misaligned_mass_input(tiny_data):
    task, model, crit = build(tiny_data, "--lambda-mass", "1", "--lambda-dae", "0", "--lambda-bt", "0",
                              "--mass-legacy-shift")
    mono = {lang: monolingual(task, tiny_data, lang) for lang in task.langs}
    failures = 0
    for key, batch in train_batches(task, model, crit, n_samples=2):
        with pytest.raises(AssertionError):
            check_teacher_forcing(task, key, batch, mono[key.split("-")[0]])
        failures += 1
    assert failures > 0


def bt_sources(task, batch, model, update_num):
    """The encoder inputs task.backtranslate makes of ``batch`` (pad stripped), one per row."""
    out, _ = task.backtranslate(batch, model, "en", update_num)
    pad = task.dictionary.pad()
    return [row[row.ne(pad)].tolist() for row in out["net_input"]["src_tokens"]]


def test_sampled_and_noised_backtranslation(tiny_data):
    """--bt-sampling-topk and --bt-noise on the task's own BT batches: teacher forcing holds, the
    draws are reproducible per update, and the noise only moves, drops and blanks tokens of the
    sampled translation (the same draws without --bt-noise), keeping the language token first and
    </s> last."""
    sampled = ["--lambda-mass", "0", "--lambda-dae", "0", "--lambda-bt", "1", "--bt-sampling-topk", "-1"]
    task, model, crit = build(tiny_data, *sampled, "--bt-noise", "--word-dropout-prob", "0.2")
    mono = {lang: monolingual(task, tiny_data, lang) for lang in task.langs}
    for key, batch in train_batches(task, model, crit, n_samples=2):
        assert check_teacher_forcing(task, key, batch, mono[key.split("-")[0]]) > 0, key

    plain, _, _ = build(tiny_data, *sampled)
    plain.load_dataset("train")
    iterator = task.get_batch_iterator(task.dataset("train"), max_tokens=600, seed=1, epoch=1)
    batch = next(k for k in iterator.next_epoch_itr(shuffle=False))["en-BT"]
    noisy, again, later = (bt_sources(task, batch, model, u) for u in (7, 7, 8))
    clean = bt_sources(plain, batch, model, 7)
    assert noisy == again and noisy != later and clean != bt_sources(plain, batch, model, 8)
    fr, eos, unk = task.lang_idx["fr"], task.dictionary.eos(), task.dictionary.unk()
    changed = 0
    for n, c in zip(noisy, clean):
        assert n[0] == c[0] == fr and n[-1] == c[-1] == eos
        kept = [t for t in n[1:-1] if t != unk]
        assert not Counter(kept) - Counter(c[1:-1]), (n, c)  # no token the translation lacks
        changed += n != c
    assert changed > len(clean) // 4

    # shuffling alone: every source keeps its tokens, and whole words move (fairseq's WordShuffle
    # keeps the first word in place)
    shuffled, _, _ = build(tiny_data, *sampled, "--bt-noise", "--word-dropout-prob", "0", "--word-blanking-prob", "0",
                           "--max-word-shuffle-distance", "4")
    shuffled.load_dataset("train")
    moved = 0
    for n, c in zip(bt_sources(shuffled, batch, model, 7), clean):
        assert Counter(n) == Counter(c) and n[:2] == c[:2] and n[-1] == c[-1] == eos
        moved += n != c
    assert moved > 0
