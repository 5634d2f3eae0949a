"""Teacher top-k distributions on disk, for offline word-level knowledge distillation.

``smallcap-teacher-topk`` runs the teacher once (teacher forcing) over a dataset split and
stores, for every target token of every sentence, the teacher's k most likely tokens and their
log-probabilities at temperature 1. Since ``softmax(logp / T)`` over the k stored tokens equals
the teacher's distribution at temperature T truncated to its top k and renormalized, any
``--kd-temperature`` works exactly at training time. The ``knowledge_distillation`` criterion
reads them with ``--teacher-topk-data DIR`` instead of running the teacher.

Layout: one directory per subset, ``DIR/{subset}/``, of numpy ``.npy`` files read as memmaps::

    offsets.npy    int64 (sentences + 1,): the rows of sentence i are offsets[i]:offsets[i + 1]
    ids.npy        int32 (tokens, k): the teacher's top-k token ids, best first; -1 for the
                   tokens of a sentence the teacher could not score (longer than its positions)
    logprobs.npy   float16 (tokens, k): their log-probabilities at temperature 1
    meta.json      k, subset, sentences, tokens, dictionary size, checksum of the target tokens,
                   the teacher checkpoint, ...

Rows follow the sentence ids (``sample["id"]``) and, within a sentence, the positions of its
non-padding target tokens. The target checksum is a SHA-1 of every sentence's target tokens
(as int32, in id order), so the data can be checked against the dataset it will be used with.
"""
import hashlib
import json
import os
import shutil
from typing import Dict, Tuple

import numpy as np
import torch

from ..errors import SmallcapError

FORMAT = "smallcap-teacher-topk/1"
META = "meta.json"


class TopKDataError(SmallcapError, ValueError):
    """Missing, malformed or mismatched teacher top-k data."""


def target_lengths_and_checksum(dataset, fast: bool = True) -> Tuple[np.ndarray, str]:
    """Every sentence's number of target tokens and the SHA-1 of all target tokens (int32, in id
    order). Reads the binarized file directly for a plain LanguagePairDataset over an mmap
    dataset; else goes through ``dataset[i]["target"]``."""
    from fairseq.data import LanguagePairDataset
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    sha = hashlib.sha1()
    tgt = getattr(dataset, "tgt", None)
    if (fast and type(dataset) is LanguagePairDataset and isinstance(tgt, MMapIndexedDataset)
            and not dataset.append_eos_to_target and not dataset.append_bos):
        lengths = np.asarray(tgt.sizes, dtype=np.int64)
        tokens = np.frombuffer(tgt._bin_buffer, dtype=tgt._index.dtype)
        if len(tokens) == lengths.sum():  # the .bin file is the sentences, one after another
            for start in range(0, len(tokens), 1 << 24):
                sha.update(tokens[start:start + (1 << 24)].astype("<i4").tobytes())
            return lengths, sha.hexdigest()
    lengths = np.zeros(len(dataset), dtype=np.int64)
    for i in range(len(dataset)):
        target = dataset[i]["target"]
        if target is None:
            raise TopKDataError("the dataset has no target side: nothing to distil")
        lengths[i] = len(target)
        sha.update(target.numpy().astype("<i4").tobytes())
    return lengths, sha.hexdigest()


class TopKWriter:
    """Writes ``DEST/{subset}.partial/`` sentence by sentence (any order), renamed to
    ``DEST/{subset}/`` by :meth:`finish`."""

    def __init__(self, dest: str, subset: str, lengths: np.ndarray, k: int):
        self.path = os.path.join(dest, subset)
        self.partial = self.path + ".partial"
        self.subset, self.k = subset, k
        self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        shutil.rmtree(self.partial, ignore_errors=True)
        os.makedirs(self.partial)
        n_tokens = int(self.offsets[-1])
        self.ids = np.lib.format.open_memmap(os.path.join(self.partial, "ids.npy"), "w+", np.int32, (n_tokens, k))
        self.logprobs = np.lib.format.open_memmap(os.path.join(self.partial, "logprobs.npy"), "w+",
                                                  np.float16, (n_tokens, k))
        self.ids[:] = -1
        self.written = np.zeros(len(lengths), dtype=bool)

    def add(self, sentence_id: int, ids: np.ndarray, logprobs: np.ndarray) -> None:
        """The top-k ids and log-probabilities, shape (target length, k), of one sentence."""
        start, end = self.offsets[sentence_id], self.offsets[sentence_id + 1]
        if ids.shape != (end - start, self.k) or logprobs.shape != ids.shape:
            raise TopKDataError(f"sentence {sentence_id}: expected ({end - start}, {self.k}) top-k rows "
                                f"(its target length in the dataset), got {tuple(ids.shape)}")
        self.ids[start:end] = ids
        self.logprobs[start:end] = logprobs
        self.written[sentence_id] = True

    def finish(self, meta: dict) -> str:
        np.save(os.path.join(self.partial, "offsets.npy"), self.offsets)
        self.ids.flush()
        self.logprobs.flush()
        del self.ids, self.logprobs
        meta = {"format": FORMAT, "subset": self.subset, "k": self.k, "sentences": len(self.written),
                "tokens": int(self.offsets[-1]), "unscored_sentences": int((~self.written).sum()), **meta}
        with open(os.path.join(self.partial, META), "w") as f:
            json.dump(meta, f, indent=2)
        shutil.rmtree(self.path, ignore_errors=True)
        os.rename(self.partial, self.path)
        return self.path


class TopKStore:
    """The top-k data of one subset, read as memmaps."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(os.path.join(path, META)) as f:
                self.meta = json.load(f)
            self.offsets = np.load(os.path.join(path, "offsets.npy"), mmap_mode="r")
            self.ids = np.load(os.path.join(path, "ids.npy"), mmap_mode="r")
            self.logprobs = np.load(os.path.join(path, "logprobs.npy"), mmap_mode="r")
        except (OSError, ValueError) as e:
            raise TopKDataError(f"{path}: unreadable teacher top-k data ({e}); rerun smallcap-teacher-topk")
        if self.meta.get("format") != FORMAT:
            raise TopKDataError(f"{path}: not smallcap-teacher-topk data (format {self.meta.get('format')!r})")
        self.k, self.subset = int(self.meta["k"]), self.meta["subset"]
        self.sentences = len(self.offsets) - 1
        if self.ids.shape != (self.offsets[-1], self.k) or self.logprobs.shape != self.ids.shape:
            raise TopKDataError(f"{path}: inconsistent teacher top-k files (truncated?); rerun smallcap-teacher-topk")

    def check_dictionary(self, size: int) -> None:
        if self.meta["dictionary_size"] != size:
            raise TopKDataError(
                f"{self.path}: the teacher top-k data was made with a {self.meta['dictionary_size']}-symbol "
                f"dictionary but the task's target dictionary has {size} symbols")

    def check_dataset(self, dataset) -> None:
        """Raise unless ``dataset`` has the sentences the data was made from: same number, same
        target lengths, same target tokens (checksum)."""
        lengths, checksum = target_lengths_and_checksum(dataset)
        if len(lengths) != self.sentences:
            raise TopKDataError(
                f"{self.path}: teacher top-k data for {self.sentences} sentences but the {self.subset} "
                f"dataset has {len(lengths)}; rerun smallcap-teacher-topk on this data")
        stored = np.diff(self.offsets)
        differ = np.flatnonzero(stored != lengths)
        if differ.size:
            i = int(differ[0])
            raise TopKDataError(
                f"{self.path}: sentence {i} of {self.subset} has {lengths[i]} target tokens but the teacher "
                f"top-k data has {stored[i]} ({differ.size} sentences differ); rerun smallcap-teacher-topk")
        if checksum != self.meta["target_checksum"]:
            raise TopKDataError(
                f"{self.path}: the target tokens of {self.subset} differ from those the teacher scored "
                "(checksum mismatch); rerun smallcap-teacher-topk on this data")

    def lookup(self, sentence_ids, target: torch.Tensor, pad: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Top-k ids (int64, -1 where there is no teacher data: padding, unscored sentences) and
        log-probabilities (float32) of a batch, both of shape ``target.shape + (k,)``."""
        tokens = target.cpu().numpy()
        ids = np.full(tokens.shape + (self.k,), -1, dtype=np.int64)
        logprobs = np.zeros(tokens.shape + (self.k,), dtype=np.float32)
        for row, sid in enumerate(sentence_ids.tolist()):
            if not 0 <= sid < self.sentences:
                raise TopKDataError(f"{self.path}: no teacher top-k data for sentence {sid} "
                                    f"({self.sentences} sentences stored)")
            positions = np.flatnonzero(tokens[row] != pad)
            start, end = int(self.offsets[sid]), int(self.offsets[sid + 1])
            if end - start != len(positions):
                raise TopKDataError(
                    f"{self.path}: sentence {sid} has {len(positions)} target tokens but the teacher "
                    f"top-k data has {end - start}; rerun smallcap-teacher-topk on this data")
            ids[row, positions] = self.ids[start:end]
            logprobs[row, positions] = self.logprobs[start:end]
        return torch.from_numpy(ids), torch.from_numpy(logprobs)


def open_stores(directory: str, flag: str = "--teacher-topk-data") -> Dict[str, TopKStore]:
    """``{subset: TopKStore}`` for every ``DIR/{subset}/meta.json``."""
    if not os.path.isdir(directory):
        raise TopKDataError(f"{flag} {directory}: no such directory (write it with smallcap-teacher-topk)")
    stores = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not name.endswith(".partial") and os.path.isfile(os.path.join(path, META)):
            store = TopKStore(path)
            stores[store.subset] = store
    if not stores:
        raise TopKDataError(f"{flag} {directory}: no teacher top-k data in it "
                            "(expected SUBSET/meta.json written by smallcap-teacher-topk)")
    return stores
