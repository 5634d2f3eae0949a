"""Denoising auto-encoder noise of Lample et al. 2018 ("Unsupervised Machine Translation Using
Monolingual Corpora Only", Sec. 2.3): word shuffle within a distance k, word dropout and word
blanking, as implemented by fairseq's :class:`~fairseq.data.noising.UnsupervisedMTNoising`.

fairseq groups subwords into words with a BPE *continuation* marker (``@@``). SentencePiece marks
word *starts* (``▁``) instead, so with a sentencepiece vocabulary fairseq would shuffle and drop
single pieces, tearing words apart. :class:`SentencePieceNoising` gives fairseq's noisers the
sentencepiece word grouping; :class:`EpochNoisingDataset` draws new noise every epoch (fairseq's
NoisingDataset seeds by index only, so every epoch sees the same noise).
"""
import numpy as np
import torch
from fairseq.data import NoisingDataset, data_utils
from fairseq.data.noising import UnsupervisedMTNoising

SPM_WORD_START = "\u2581"


class SentencePieceNoising(UnsupervisedMTNoising):
    """fairseq's UnsupervisedMTNoising with words made of a ``▁``-initial piece and its followers.
    Special symbols (eos, language tokens, <mask>) are words of their own."""

    def __init__(self, dictionary, max_word_shuffle_distance, word_dropout_prob, word_blanking_prob):
        super().__init__(dictionary, max_word_shuffle_distance, word_dropout_prob,
                         word_blanking_prob, bpe_cont_marker=None, bpe_end_marker=None)
        starts = np.array(
            [sym.startswith(SPM_WORD_START) or i < dictionary.nspecial or sym.startswith("<")
             or (sym.startswith("__") and sym.endswith("__"))
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
