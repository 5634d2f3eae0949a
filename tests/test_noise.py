import numpy as np
import pytest
import torch
from fairseq.data import Dictionary

from fairseq_smallcap.data import EpochNoisingDataset, SentencePieceNoising, build_word_noiser, word_noise_scheme
from fairseq_smallcap.data.sentencepiece_noising import WordNoiseSchemeError


def spm_dictionary():
    d = Dictionary()
    for piece in ["▁the", "▁big", "▁do", "g", "s", "▁run", "▁fast", "▁a", "ll", "y", "▁."]:
        d.add_symbol(piece)
    return d


def words(d, tokens):
    return "".join(d[t] for t in tokens if t != d.eos()).split("▁")[1:]


def test_word_grouping_follows_sentencepiece_word_starts():
    d = spm_dictionary()
    noiser = SentencePieceNoising(d, 3, 0.1, 0.2)
    toks = torch.tensor([d.index(p) for p in ["▁the", "▁big", "▁do", "g", "s", "▁run", "▁a", "ll", "y"]] + [d.eos()])
    idx = noiser.word_idx(toks.unsqueeze(1))[:, 0]
    assert idx.tolist() == [0, 1, 2, 2, 2, 3, 4, 4, 4, 5]  # eos is a word of its own


def test_shuffle_dropout_blanking_keep_words_whole_and_eos_last():
    d = spm_dictionary()
    sent = ["▁the", "▁big", "▁do", "g", "s", "▁run", "▁fast", "▁a", "ll", "y", "▁."]
    toks = torch.tensor([d.index(p) for p in sent] + [d.eos()])
    clean_words = set(words(d, toks))
    noiser = SentencePieceNoising(d, max_word_shuffle_distance=3, word_dropout_prob=0.2, word_blanking_prob=0.2)
    lengths, dropped, blanked = [], 0, 0
    for seed in range(200):
        np.random.seed(seed)
        noisy = noiser.noising(toks.unsqueeze(1).clone(), torch.LongTensor([len(toks)]))[:, 0]
        noisy = noisy[noisy != d.pad()]
        assert noisy[-1] == d.eos()
        blanked += int((noisy == d.unk()).sum())
        kept = [w for w in words(d, noisy[noisy != d.unk()])]
        assert set(kept) <= clean_words  # no torn words
        lengths.append(len(noisy))
        dropped += len(clean_words) - len(kept)
    assert min(lengths) < len(toks) and blanked > 0 and dropped > 0


def test_shuffle_distance_bound():
    d = spm_dictionary()
    noiser = SentencePieceNoising(d, max_word_shuffle_distance=3, word_dropout_prob=0.0, word_blanking_prob=0.0)
    sent = ["▁the", "▁big", "▁run", "▁fast", "▁a", "▁.", "▁the", "▁big"]
    toks = torch.tensor([d.index(p) for p in sent] + [d.eos()])
    for seed in range(100):
        np.random.seed(seed)
        noisy = noiser.noising(toks.unsqueeze(1).clone(), torch.LongTensor([len(toks)]))[:, 0]
        assert sorted(noisy.tolist()) == sorted(toks.tolist())
        # each token moves less than k + 1 positions (Lample et al. 2018: |sigma(i) - i| <= k)
        positions = {}
        for i, t in enumerate(toks.tolist()):
            positions.setdefault(t, []).append(i)
        for j, t in enumerate(noisy.tolist()):
            assert min(abs(j - i) for i in positions[t]) <= 3


def test_epoch_noising_dataset_changes_with_epoch_only():
    d = spm_dictionary()
    sents = [torch.tensor([d.index(p) for p in ["▁the", "▁big", "▁do", "g", "▁run", "▁fast", "▁a", "▁."]] + [d.eos()])]
    from fairseq.data import ListDataset

    ds = EpochNoisingDataset(ListDataset(sents, [len(s) for s in sents]), d, seed=1, noiser=SentencePieceNoising(d, 3, 0.1, 0.2))
    first = ds[0]
    assert torch.equal(first, ds[0])
    outputs = set()
    for epoch in range(1, 15):
        ds.set_epoch(epoch)
        outputs.add(tuple(ds[0].tolist()))
    assert len(outputs) > 3


# Ten words, several of them split into subwords, in both schemes.
TEN_WORDS = [["the"], ["big", "gest"], ["dog"], ["runs"], ["fast", "er"], ["than"], ["a"],
             ["cat", "ti", "ly"], ["on"], ["grass"]]


def scheme_dictionary(scheme):
    """(dictionary, token ids of TEN_WORDS + eos, the words as strings) in ``scheme``."""
    d, tokens = Dictionary(), []
    for word in TEN_WORDS:
        for k, piece in enumerate(word):
            if scheme == "sentencepiece":
                symbol = ("▁" if k == 0 else "") + piece
            else:
                symbol = piece + ("@@" if k < len(word) - 1 else "")
            tokens.append(d.add_symbol(symbol))
    d.add_symbol("<mask>"), d.add_symbol("__en__")
    return d, torch.tensor(tokens + [d.eos()]), ["".join(w) for w in TEN_WORDS]


def as_words(d, scheme, tokens):
    text = " ".join(d[t] for t in tokens if t != d.eos())
    if scheme == "sentencepiece":
        return text.replace(" ", "").replace("<unk>", "▁<unk>").split("▁")[1:]
    return text.replace("@@ ", "").split()


@pytest.mark.parametrize("scheme", ["sentencepiece", "subword_nmt"])
def test_scheme_is_read_off_the_dictionary_and_can_be_forced(scheme):
    d, _, _ = scheme_dictionary(scheme)
    assert word_noise_scheme(d) == scheme
    other = "subword_nmt" if scheme == "sentencepiece" else "sentencepiece"
    assert word_noise_scheme(d, other) == other


def test_a_dictionary_without_subword_markers_is_one_clear_error():
    d = Dictionary()
    for word in ["the", "dog", "runs"]:
        d.add_symbol(word)
    with pytest.raises(WordNoiseSchemeError) as e:
        word_noise_scheme(d, source="data/dict.txt")
    message = str(e.value)
    assert "\n" not in message and message.startswith("data/dict.txt: ")
    assert "--word-noise-scheme" in message


@pytest.mark.parametrize("scheme", ["sentencepiece", "subword_nmt"])
def test_ten_words_are_reordered_whole_and_never_blanked_whole(scheme):
    d, tokens, clean = scheme_dictionary(scheme)
    noiser = build_word_noiser(d, word_noise_scheme(d), 3, 0.1, 0.2)
    reordered = blanked = dropped = 0
    for seed in range(300):
        np.random.seed(seed)
        noisy = noiser.noising(tokens.unsqueeze(1).clone(), torch.LongTensor([len(tokens)]))[:, 0]
        noisy = noisy[noisy != d.pad()]
        assert noisy[-1] == d.eos()
        words = as_words(d, scheme, noisy)
        real = [w for w in words if w != "<unk>"]
        assert set(real) <= set(clean), words  # every word whole: no subword torn off or moved alone
        assert len(real) >= 1 and len(words) >= 5, words  # never one blank or one token left
        # a blank replaces a whole word by one <unk>, whatever its number of subwords
        assert sum(w == "<unk>" for w in words) == int((noisy == d.unk()).sum())
        reordered += [w for w in clean if w in real] != real
        blanked += len(real) < len(words)
        dropped += len(words) < len(clean)
    assert reordered > 100 and blanked > 100 and dropped > 50
