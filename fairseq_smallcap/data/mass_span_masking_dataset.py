"""MASS span masking (Song et al. 2019, "MASS: Masked Sequence to Sequence Pre-training for
Language Generation", Sec. 2.2).

For a sentence x of m tokens (plus its end-of-sentence symbol), a contiguous span x[u:u+k] with
k = round(ratio * m) is masked in the encoder input (80% <mask>, 10% a random token, 10% kept,
as in BERT and MASS). The decoder predicts only the span, teacher-forced: its input at a span
position j is the previous token x[j-1] (the language token for j = 0) and <mask> everywhere
else, and the target is padding outside the span, so the loss covers exactly the k span tokens.
Decoder positions are the encoder's, as in MASS: the encoder reads ``[__lang__] x``, so both
sides carry one leading position (the language token in the decoder input, padding in the
target), and the decoder predicts x[j] at the position where the encoder holds x[j]:

    encoder input   __en__  a       <mask>  <mask>  <mask>  e       f       </s>
    decoder input   __en__  <mask>  a       b       c       <mask>  <mask>  <mask>
    target          <pad>   <pad>   b       c       d       <pad>   <pad>   <pad>

``--mass-legacy-shift`` reproduces, for ablations only, the decoder input of releases before
this fix, shifted one position too far (x[j-2] at span position j: the decoder never sees the
previous token).
"""
from typing import Dict, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils


def mass_span_mask(
    tokens: torch.Tensor,
    rng: np.random.RandomState,
    mask_idx: int,
    pad_idx: int,
    random_token_range: tuple,
    ratio: float = 0.5,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    bos: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Mask one contiguous span of ``tokens`` (a 1-D tensor ending with eos).

    Returns ``source`` (span masked), ``decoder_input`` and ``target``, all of ``len(tokens)``
    and aligned: at a span position j, ``target[j] = x[j]`` and ``decoder_input[j] = x[j-1]``
    (``bos``, the token the encoder reads before x[0], when the span starts at 0; <mask> if
    ``bos`` is None); outside the span ``target`` is padding and ``decoder_input`` <mask>.
    """
    length = tokens.numel() - 1  # the eos is never masked
    span = max(1, int(round(ratio * length))) if length > 0 else 0
    start = int(rng.randint(0, length - span + 1)) if length > 0 else 0
    end = start + span

    source = tokens.clone()
    choice = rng.random_sample(span)
    replaced = torch.from_numpy(choice < mask_prob)
    randomized = torch.from_numpy((choice >= mask_prob) & (choice < mask_prob + random_prob))
    span_tokens = source[start:end]
    span_tokens[replaced] = mask_idx
    low, high = random_token_range
    span_tokens[randomized] = torch.from_numpy(
        rng.randint(low, high, size=int(randomized.sum()))
    ).to(tokens.dtype)

    target = torch.full_like(tokens, pad_idx)
    target[start:end] = tokens[start:end]
    decoder_input = torch.full_like(tokens, mask_idx)
    decoder_input[start + 1 : end] = tokens[start : end - 1]
    if start > 0:
        decoder_input[start] = tokens[start - 1]
    elif bos is not None and span > 0:
        decoder_input[start] = bos
    return {"source": source, "decoder_input": decoder_input, "target": target}


class MassSpanMaskingDataset(FairseqDataset):
    """Monolingual sentences turned into MASS samples, collated like a LanguagePairDataset batch.

    Args:
        dataset: a :class:`~fairseq.data.LanguagePairDataset` of clean (lang-tagged source,
            sentence) pairs; its target side is masked. Kept as ``self.dataset`` so that
            :class:`~fairseq.data.RoundRobinZipDatasets` can filter it by size.
        lang_idx: the language token, first token of the encoder and decoder inputs.
        legacy_shift: ablation only: the misaligned decoder input of releases before the fix
            (x[j-2] at span position j), to measure what the misalignment did.
    """

    def __init__(self, dataset, dictionary, lang_idx: int, mask_idx: int, seed: int,
                 ratio: float = 0.5, mask_prob: float = 0.8, random_prob: float = 0.1,
                 num_special_tail: int = 0, left_pad_source: bool = True,
                 legacy_shift: bool = False):
        super().__init__()
        self.dataset = dataset
        self.dictionary = dictionary
        self.lang_idx = lang_idx
        self.mask_idx = mask_idx
        self.seed = seed
        self.ratio, self.mask_prob, self.random_prob = ratio, mask_prob, random_prob
        # random replacements come from the real vocabulary, never special or language tokens
        self.random_token_range = (dictionary.nspecial, len(dictionary) - num_special_tail)
        self.left_pad_source = left_pad_source
        self.legacy_shift = legacy_shift
        self.epoch = 1

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False  # masks are drawn anew every epoch

    def set_epoch(self, epoch):
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getitem__(self, index):
        sentence = self.dataset.tgt[index]
        with data_utils.numpy_seed(self.seed, self.epoch, index):
            rng = np.random.RandomState(np.random.randint(2**31 - 1))
        masked = mass_span_mask(
            sentence, rng, self.mask_idx, self.dictionary.pad(), self.random_token_range,
            self.ratio, self.mask_prob, self.random_prob,
            bos=None if self.legacy_shift else self.lang_idx,
        )
        lang = sentence.new([self.lang_idx])
        if self.legacy_shift:  # the pre-fix sample: decoder input shifted one step too far
            return {
                "id": index,
                "source": torch.cat([lang, masked["source"]]),
                "prev_output_tokens": torch.cat([lang, masked["decoder_input"][:-1]]),
                "target": masked["target"],
            }
        return {
            "id": index,
            "source": torch.cat([lang, masked["source"]]),
            "prev_output_tokens": torch.cat([lang, masked["decoder_input"]]),
            "target": torch.cat([lang.new([self.dictionary.pad()]), masked["target"]]),
        }

    def __len__(self):
        return len(self.dataset)

    def collater(self, samples):
        if len(samples) == 0:
            return {}
        pad, eos = self.dictionary.pad(), self.dictionary.eos()
        src = data_utils.collate_tokens([s["source"] for s in samples], pad, eos, self.left_pad_source)
        target = data_utils.collate_tokens([s["target"] for s in samples], pad, eos, False)
        prev = data_utils.collate_tokens([s["prev_output_tokens"] for s in samples], pad, eos, False)
        return {
            "id": torch.LongTensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "ntokens": int(target.ne(pad).sum()),
            "net_input": {
                "src_tokens": src,
                "src_lengths": torch.LongTensor([s["source"].numel() for s in samples]),
                "prev_output_tokens": prev,
            },
            "target": target,
        }

    def num_tokens(self, index):
        return self.dataset.num_tokens(index)

    def size(self, index):
        return self.dataset.size(index)

    @property
    def sizes(self):
        return self.dataset.src_sizes

    def ordered_indices(self):
        return self.dataset.ordered_indices()

    @property
    def supports_prefetch(self):
        return self.dataset.supports_prefetch

    def prefetch(self, indices):
        self.dataset.prefetch(indices)
