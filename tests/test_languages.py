"""Language handling of the unsupervised_translation task."""
import pytest
import torch
from fairseq import tasks

import fairseq_smallcap  # noqa: F401
from fairseq_smallcap.errors import SmallcapError
from fairseq_smallcap.tasks.unsupervised_translation import (
    UnsupervisedTranslationConfig,
    UnsupervisedTranslationError,
)


def make_task(data, **overrides):
    # outside the CLI, the fields fairseq interpolates from other config groups are given here
    overrides = {"dataset_impl": "mmap", "seed": 1, "train_subset": "train",
                 "required_seq_len_multiple": 1, **overrides}
    cfg = UnsupervisedTranslationConfig(data=str(data), **overrides)
    return tasks.TASK_REGISTRY["unsupervised_translation"].setup_task(cfg)


def test_language_tokens_and_mask_are_added_in_sorted_order(tiny_data):
    a = make_task(tiny_data, mono_langs="en,fr")
    b = make_task(tiny_data, mono_langs="fr,en")
    base = len(a.dictionary) - 3
    assert a.mask_idx == b.mask_idx == base
    assert a.lang_idx == b.lang_idx == {"en": base + 1, "fr": base + 2}
    assert a.dictionary[a.lang_idx["fr"]] == "__fr__"
    assert a.source_dictionary is a.target_dictionary


def test_target_language_from_sample_or_flag(tiny_data):
    task = make_task(tiny_data, source_lang="en", target_lang="fr")
    with_target = {"net_input": {"prev_output_tokens": torch.tensor([[task.lang_idx["en"], 5]])}}
    assert task.target_lang_index(with_target) == task.lang_idx["en"]
    assert task.target_lang_index({"net_input": {}}) == task.lang_idx["fr"]


def test_inference_dataset_is_tagged_with_the_source_language(tiny_data):
    task = make_task(tiny_data, source_lang="fr", target_lang="en")
    ds = task.build_dataset_for_inference([torch.tensor([10, 11, 2]), torch.tensor([12, 2])], [3, 2])
    batch = ds.collater([ds[0], ds[1]])
    src = batch["net_input"]["src_tokens"]
    for row in src:
        row = row[row != task.dictionary.pad()]
        assert row[0] == task.lang_idx["fr"]
    assert batch["net_input"]["src_lengths"].tolist() == [4, 3]


def test_parallel_data_directions(tiny_data):
    both = make_task(tiny_data)
    both.load_dataset("valid")
    assert set(both.datasets["valid"].datasets) == {"en-fr", "fr-en"}
    one = make_task(tiny_data, source_lang="fr", target_lang="en")
    one.load_dataset("test")
    sample = one.datasets["test"].collater([one.datasets["test"][0]])
    assert sample["net_input"]["src_tokens"][0][sample["net_input"]["src_tokens"][0] != 1][0] == one.lang_idx["fr"]
    assert sample["net_input"]["prev_output_tokens"][0, 0] == one.lang_idx["en"]


def test_train_data_has_one_dataset_per_language_and_objective(tiny_data):
    task = make_task(tiny_data, lambda_mass="0:1,10:0", lambda_dae="0", lambda_bt="0:0,10:1")
    task.load_dataset("train")
    assert list(task.datasets["train"].datasets) == ["en-MASS", "en-BT", "fr-MASS", "fr-BT"]


@pytest.mark.parametrize("overrides, message", [
    ({"mono_langs": "en"}, "at least two distinct languages"),
    ({"source_lang": "de", "target_lang": "fr"}, "unknown language 'de' for --source-lang"),
    ({"target_lang": "xx"}, "unknown language 'xx' for --target-lang"),
    ({"lambda_bt": "0:1,abc"}, "--lambda-bt '0:1,abc'"),
])
def test_bad_flags_name_the_flag(tiny_data, overrides, message):
    with pytest.raises(SmallcapError, match=message):
        make_task(tiny_data, **overrides)


def test_all_lambdas_zero_is_an_error(tiny_data):
    task = make_task(tiny_data, lambda_mass="0", lambda_dae="0", lambda_bt="0")
    with pytest.raises(UnsupervisedTranslationError, match="nothing to train"):
        task.load_dataset("train")


def test_missing_data_dir_and_dictionary(tmp_path):
    with pytest.raises(UnsupervisedTranslationError, match="data directory not found"):
        make_task(tmp_path / "nope")
    with pytest.raises(UnsupervisedTranslationError, match="no dictionary at .*dict.txt"):
        make_task(tmp_path)


def test_backtranslate_replaces_the_source_with_a_tagged_translation(tiny_data):
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY

    task = make_task(tiny_data, lambda_dae="0", lambda_bt="1")
    task.load_dataset("train")
    train = task.datasets["train"]
    train.ordered_indices()
    sample = train.collater([train[i] for i in range(4)])["en-BT"]
    args = Namespace(arch="smallcap_very_small", encoder_embed_dim=16, decoder_embed_dim=16,
                     encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32, decoder_layers=1)
    ARCH_CONFIG_REGISTRY["smallcap_very_small"](args)
    model = task.build_model(args)
    model.train()
    out, filter_log = task.backtranslate(sample, model, "en")
    assert filter_log == {}  # no --bt-filter-scores
    assert model.training  # the model is back in training mode
    pad = task.dictionary.pad()
    src, lengths = out["net_input"]["src_tokens"], out["net_input"]["src_lengths"]
    for row, length in zip(src, lengths):
        tokens = row[row != pad]
        assert len(tokens) == length and tokens[0] == task.lang_idx["fr"] and tokens[-1] == task.dictionary.eos()
        assert not (tokens[1:] == task.mask_idx).any()
    assert torch.equal(out["target"], sample["target"])  # learn to produce the real sentence
    assert out["net_input"]["prev_output_tokens"][0, 0] == task.lang_idx["en"]
    assert sample["net_input"]["src_tokens"] is not src  # the input sample is left as it was
