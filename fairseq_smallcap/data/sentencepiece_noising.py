"""Denoising auto-encoder noise of Lample et al. 2018 ("Unsupervised Machine Translation Using
Monolingual Corpora Only", Sec. 2.3): word shuffle within a distance k, word dropout and word
blanking, as implemented by fairseq's :class:`~fairseq.data.noising.UnsupervisedMTNoising`.

The noise works on whole words, so it must know how the dictionary's subwords make words.
fairseq groups subwords with a BPE *continuation* marker (subword-nmt's ``@@``: ``walk@@ ing``).
SentencePiece marks word *starts* (``▁walk ing``) instead, which fairseq does not know: without
it a sentencepiece sentence would be shuffled and dropped piece by piece (with ``@@`` grouping)
or be one single word (with ``▁`` read as continuation-free BPE: never shuffled, blanked whole).
:func:`word_noise_scheme` reads the scheme off the dictionary and :func:`build_word_noiser`
returns fairseq's own :class:`~fairseq.data.noising.UnsupervisedMTNoising` for ``@@`` data and
:class:`SentencePieceNoising` (the same noisers with the ``▁`` grouping) for sentencepiece data.
:class:`EpochNoisingDataset` draws new noise every epoch (fairseq's NoisingDataset seeds by
index only, so every epoch sees the same noise).
"""
import numpy as np
import torch
from fairseq.data import NoisingDataset, data_utils
from fairseq.data.noising import UnsupervisedMTNoising

from ..errors import SmallcapError

SPM_WORD_START = "\u2581"
BPE_CONTINUATION = "@@"
WORD_NOISE_SCHEMES = ("auto", "sentencepiece", "subword_nmt")


class WordNoiseSchemeError(SmallcapError, ValueError):
    """The dictionary's subword scheme cannot be told, or does not fit the one asked for."""


def _is_special(index: int, symbol: str, nspecial: int) -> bool:
    return index < nspecial or symbol.startswith("<") or (symbol.startswith("__") and symbol.endswith("__"))


def word_noise_scheme(dictionary, requested: str = "auto", source: str = "the dictionary") -> str:
    """``sentencepiece`` or ``subword_nmt``: how ``dictionary``'s subwords make words.

    ``auto`` counts the (non-special) symbols that start with ``▁`` and those that end with
    ``@@`` and takes the scheme whose marker is the more common; a dictionary with neither
    marker raises :class:`WordNoiseSchemeError`. An explicit scheme is returned as given."""
    if requested not in WORD_NOISE_SCHEMES:
        raise WordNoiseSchemeError(
            f"--word-noise-scheme {requested!r}: expected one of {', '.join(WORD_NOISE_SCHEMES)}")
    if requested != "auto":
        return requested
    starts = conts = 0
    for i, sym in enumerate(dictionary.symbols):
        if _is_special(i, sym, dictionary.nspecial):
            continue
        starts += sym.startswith(SPM_WORD_START)
        conts += sym.endswith(BPE_CONTINUATION)
    if starts == conts == 0:
        raise WordNoiseSchemeError(
            f"{source}: no symbol starts with '{SPM_WORD_START}' (sentencepiece) or ends with "
            f"'{BPE_CONTINUATION}' (subword-nmt BPE), so the denoising noise cannot find words; "
            "pass --word-noise-scheme sentencepiece or subword_nmt")
    return "sentencepiece" if starts >= conts else "subword_nmt"


def build_word_noiser(dictionary, scheme: str, max_word_shuffle_distance: float,
                      word_dropout_prob: float, word_blanking_prob: float) -> UnsupervisedMTNoising:
    """Lample et al.'s word shuffle, dropout and blanking with the word grouping of ``scheme``
    (``sentencepiece`` or ``subword_nmt``; see :func:`word_noise_scheme`)."""
    if scheme == "sentencepiece":
        return SentencePieceNoising(dictionary, max_word_shuffle_distance, word_dropout_prob,
                                    word_blanking_prob)
    if scheme == "subword_nmt":
        return UnsupervisedMTNoising(dictionary, max_word_shuffle_distance, word_dropout_prob,
                                     word_blanking_prob, bpe_cont_marker=BPE_CONTINUATION)
    raise WordNoiseSchemeError(f"unknown word noise scheme {scheme!r}")


class SentencePieceNoising(UnsupervisedMTNoising):
    """fairseq's UnsupervisedMTNoising with words made of a ``▁``-initial piece and its followers.
    Special symbols (eos, language tokens, <mask>) are words of their own."""

    def __init__(self, dictionary, max_word_shuffle_distance, word_dropout_prob, word_blanking_prob):
        super().__init__(dictionary, max_word_shuffle_distance, word_dropout_prob,
                         word_blanking_prob, bpe_cont_marker=None, bpe_end_marker=None)
        starts = np.array(
            [sym.startswith(SPM_WORD_START) or _is_special(i, sym, dictionary.nspecial)
             for i, sym in enumerate(dictionary.symbols)]
        )
        self.word_starts = starts
        for noiser in (self.word_dropout, self.word_shuffle):
            noiser.get_word_idx = self.word_idx

    def word_idx(self, x: torch.Tensor) -> np.ndarray:
        """x: (T x B) tokens -> (T x B) index of the word each token belongs to."""
        starts = self.word_starts[x.numpy()].reshape(x.shape)
        starts[0] = True
        return starts.cumsum(0) - 1


class EpochNoisingDataset(NoisingDataset):
    """fairseq's NoisingDataset with noise seeded by (seed, epoch, index)."""

    def __init__(self, src_dataset, src_dict, seed, noiser):
        super().__init__(src_dataset, src_dict, seed, noiser=noiser)
        self.epoch = 1

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, index):
        tokens = self.src_dataset[index]
        lengths = torch.LongTensor([len(tokens)])
        with data_utils.numpy_seed(self.seed, self.epoch, index):
            noisy = self.noiser.noising(tokens.unsqueeze(1), lengths)
        return noisy[:, 0]
