"""Datasets and batch transforms of the unsupervised translation task."""
from .mass_span_masking_dataset import MassSpanMaskingDataset, mass_span_mask
from .sentencepiece_noising import (EpochNoisingDataset, SentencePieceNoising, build_word_noiser,
                                    word_noise_scheme)

__all__ = ["MassSpanMaskingDataset", "mass_span_mask", "EpochNoisingDataset", "SentencePieceNoising",
           "build_word_noiser", "word_noise_scheme"]
