"""Steps 2 and 3a: the joint sentencepiece model (trained, or reused) and encoding text to pieces."""
import itertools
import shutil
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np

from .common import _WHITESPACE, PrepareError, file_sha256, logger
from .inputs import TextSource, _check_exists, _iter_text_file

DEFAULT_VOCAB_SIZE = 8000
DEFAULT_SPM_INPUT_SENTENCE_SIZE = 1_000_000
SPM_MODEL_TYPES = ("unigram", "bpe", "char", "word")
ENCODE_BATCH_LINES = 10_000


@dataclass(frozen=True)
class SpmOptions:
    """How to get the joint sentencepiece model: train one, or reuse ``model``."""

    vocab_size: int = DEFAULT_VOCAB_SIZE
    model_type: str = "unigram"
    input_sentence_size: int = DEFAULT_SPM_INPUT_SENTENCE_SIZE
    soft_vocab_limit: bool = False
    seed: int = 1
    threads: int = 1
    model: Optional[str] = None

    def check(self) -> None:
        if self.model is not None:
            _check_exists(TextSource(self.model, "--spm-model"))
            return
        if self.model_type not in SPM_MODEL_TYPES:
            raise PrepareError(f"unknown sentencepiece model type {self.model_type!r}")
        if self.vocab_size < 2:
            raise PrepareError(f"--vocab-size must be at least 2 (got {self.vocab_size})")
        if self.threads < 1:
            raise PrepareError(f"--spm-threads must be at least 1 (got {self.threads})")

    def fingerprint(self) -> dict:
        """The options the model depends on (only the model's hash when reusing one)."""
        if self.model is not None:
            return {"spm_model_sha256": file_sha256(self.model)}
        return {
            "vocab_size": self.vocab_size, "spm_model_type": self.model_type,
            "spm_input_sentence_size": self.input_sentence_size,
            "soft_vocab_limit": self.soft_vocab_limit, "seed": self.seed, "spm_threads": self.threads,
        }


def normalize_spaces(text: str) -> str:
    """Map every run of (Unicode) whitespace to one space, as fairseq's tokenizer would see it."""
    return _WHITESPACE.sub(" ", text).strip()


def train_sentencepiece(
    train_files: Sequence[Path],
    model_prefix: Path,
    vocab_size: int,
    model_type: str,
    input_sentence_size: int,
    soft_vocab_limit: bool,
    seed: int,
    num_threads: int,
) -> None:
    """Train the joint sentencepiece model on all ``train_files`` -> ``model_prefix``.model/.vocab.

    <unk> is id 0; bos, eos and pad are disabled (fairseq adds its own). Training is
    deterministic for a fixed ``seed`` and ``num_threads``.
    """
    import sentencepiece as spm

    def sentences() -> Iterator[str]:
        for path in train_files:
            for text in _iter_text_file(path):
                yield normalize_spaces(text)

    spm.set_random_generator_seed(seed)
    logger.info(
        f"training the joint sentencepiece model: {model_type}, vocab size {vocab_size}, "
        f"on {', '.join(str(p) for p in train_files)}"
    )
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_prefix=str(model_prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            hard_vocab_limit=not soft_vocab_limit,
            num_threads=num_threads,
            minloglevel=1,
        )
    except RuntimeError as e:
        hint = ""
        if "vocab" in str(e).lower():
            hint = " (lower --vocab-size, or pass --soft-vocab-limit)"
        raise PrepareError(f"sentencepiece training failed: {e}{hint}") from None


def install_spm_model(spm_model: str, dest: Path) -> None:
    """Copy an existing sentencepiece model to ``dest/spm.model`` (+ ``spm.vocab``)."""
    import sentencepiece as spm

    src_model = Path(spm_model)
    dst_model = dest / "spm.model"
    if src_model.resolve() != dst_model.resolve():
        shutil.copyfile(src_model, dst_model)
    src_vocab = src_model.with_suffix(".vocab")
    dst_vocab = dest / "spm.vocab"
    if src_vocab.is_file():
        if src_vocab.resolve() != dst_vocab.resolve():
            shutil.copyfile(src_vocab, dst_vocab)
        return
    sp = spm.SentencePieceProcessor(model_file=str(dst_model))
    with open(dst_vocab, "w", encoding="utf-8", newline="\n") as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")


def load_spm(model_path: Path):
    """Load a sentencepiece model, raising :class:`PrepareError` if it is not one."""
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=str(model_path))
    except (OSError, RuntimeError) as e:
        raise PrepareError(f"cannot load sentencepiece model {model_path}: {e}") from None


def make_sentencepiece(dest: Path, langs: Sequence[str], options: SpmOptions):
    """Step 2: train the joint model on ``dest/raw/train.*`` (or install ``options.model``)."""
    if options.model is not None:
        logger.info(f"using the existing sentencepiece model {options.model}")
        install_spm_model(options.model, dest)
    else:
        train_sentencepiece(
            [dest / "raw" / f"train.{lang}" for lang in langs], dest / "spm", options.vocab_size,
            options.model_type, options.input_sentence_size, options.soft_vocab_limit,
            options.seed, options.threads,
        )
    return load_spm(dest / "spm.model")


@dataclass
class EncodedFile:
    """What encoding one raw file produced: per-line sizes (pieces + eos) and unk count."""

    sizes: array = field(default_factory=lambda: array("i"))
    unk: int = 0
    no_pieces: int = 0


def encode_file(sp, id_to_token: Sequence[str], in_path: Path, out_path: Path, counts) -> EncodedFile:
    """Encode ``in_path`` into space-separated pieces in ``out_path``, one line per line.

    Unknown pieces are written as ``<unk>``. If ``counts`` (a numpy int64 array, one slot per
    spm id) is given, the piece frequencies are added to it.
    """
    result = EncodedFile()
    unk_id = sp.unk_id()

    def flush(batch: List[str], out) -> None:
        batch_ids = sp.encode([normalize_spaces(t) for t in batch], out_type=int)
        out.write("".join(" ".join(id_to_token[i] for i in ids) + "\n" for ids in batch_ids))
        result.sizes.extend(len(ids) + 1 for ids in batch_ids)  # fairseq appends </s>
        result.no_pieces += sum(1 for ids in batch_ids if not ids)
        flat = np.fromiter(itertools.chain.from_iterable(batch_ids), dtype=np.int64)
        result.unk += int(np.count_nonzero(flat == unk_id))
        if counts is not None:
            np.add(counts, np.bincount(flat, minlength=len(counts))[: len(counts)], out=counts)

    with open(out_path, "w", encoding="utf-8", newline="\n") as out:
        batch: List[str] = []
        for text in _iter_text_file(in_path):
            batch.append(text)
            if len(batch) >= ENCODE_BATCH_LINES:
                flush(batch, out)
                batch = []
        if batch:
            flush(batch, out)
    return result
