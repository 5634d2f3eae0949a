"""``--init-embeddings FILE``: pretrained subword embeddings as a model's initial embedding
tables (Lample et al. 2018b, "Phrase-Based & Neural Unsupervised Machine Translation", Sec. 4.2;
Conneau & Lample 2019, "Cross-lingual Language Model Pretraining", Sec. 5.1: skip-gram vectors
trained on both languages' joint-BPE text, made here by ``smallcap-embeddings``).

The file is word2vec text (``N D``, then ``symbol v1 ... vD``) listing the data's ``dict.txt``
symbols in order, i.e. the dictionary's rows ``nspecial`` on. It is read only when a model is
built to be trained: the task's ``build_model`` drops the flag when fairseq builds a model to
load a checkpoint into (``fairseq-generate``, ``fairseq-interactive``), whose weights replace
the embeddings anyway.
"""
import json
import logging
import os
from typing import List, Optional, Tuple

import numpy as np

from ..errors import SmallcapError

logger = logging.getLogger(__name__)


class EmbeddingsError(SmallcapError):
    """Bad data directory, embeddings file or flag (``smallcap-embeddings``, ``--init-embeddings``)."""


def count_symbols(dict_path: str, flag: str, path: str) -> int:
    """The number of symbols (lines) of a fairseq ``dict.txt``."""
    try:
        with open(dict_path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    except OSError as e:
        raise EmbeddingsError(f"{flag} {path}: cannot read the dictionary {dict_path}: {e.strerror}") from e


def read_vectors(path: str, flag: str = "--init-embeddings") -> Tuple[List[str], np.ndarray]:
    """The symbols and the (N x D float32) matrix of a word2vec text file."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise EmbeddingsError(f"{flag} {path}: cannot read: {e.strerror}") from e
    with f:
        header = f.readline().split()
        if len(header) != 2 or not all(x.isdigit() for x in header) or int(header[1]) == 0:
            raise EmbeddingsError(f"{flag} {path}: not a word2vec text file (the first line should "
                                  "be 'N D')")
        n, dim = int(header[0]), int(header[1])
        symbols, matrix = [], np.empty((n, dim), dtype=np.float32)
        for line_no, line in enumerate(f, start=2):
            fields = line.rstrip("\n").split(" ")
            if len(symbols) == n:
                if line.strip():
                    raise EmbeddingsError(f"{flag} {path}: more than the {n} vectors its first line says")
                continue
            if len(fields) != dim + 1:
                raise EmbeddingsError(f"{flag} {path}: line {line_no} has {len(fields) - 1} values, "
                                      f"not the {dim} of the first line")
            try:
                matrix[len(symbols)] = np.array(fields[1:], dtype=np.float32)
            except ValueError as e:
                raise EmbeddingsError(f"{flag} {path}: line {line_no}: {e}") from e
            symbols.append(fields[0])
    if len(symbols) != n:
        raise EmbeddingsError(f"{flag} {path}: {len(symbols)} vectors, not the {n} its first line says")
    if not np.isfinite(matrix).all():
        raise EmbeddingsError(f"{flag} {path}: has non-finite values")
    return symbols, matrix


def init_embeddings(path: str, dictionary, dict_path: Optional[str], tables, target_std,
                    flag: str = "--init-embeddings") -> dict:
    """Copy the vectors of ``path`` (a ``smallcap-embeddings`` file) into the embedding tables
    ``tables`` (``nn.Embedding`` modules over ``dictionary``; a table listed twice is loaded once),
    rows ``dictionary.nspecial`` on, rescaled by ``target_std(dim) / std(file)`` so that they
    have the std of the model's own initialisation. fairseq's special symbols and the task's
    appended ``<mask>`` and language tokens keep their random initialisation.

    The file must list the symbols of ``dict_path`` (the data's dict.txt, the dictionary's rows
    ``nspecial`` on) in order: it may go on into the appended tokens, not beyond the dictionary.
    A mismatch raises :class:`EmbeddingsError` (one line naming both sides). Returns a summary."""
    import torch

    symbols, matrix = read_vectors(path, flag)
    nspecial = dictionary.nspecial
    fits = len(dictionary) - nspecial
    where = f"the dictionary ({dict_path})" if dict_path else "the task's dictionary"
    expected = fits
    if dict_path is not None:
        expected = count_symbols(dict_path, flag, path)
    if not expected <= len(symbols) <= fits:
        raise EmbeddingsError(f"{flag} {path} has {len(symbols):,} symbols but {where} has "
                              f"{expected:,}: made for another dictionary?")
    for i, symbol in enumerate(symbols):
        if symbol != dictionary[nspecial + i]:
            raise EmbeddingsError(f"{flag} {path}: symbol {i + 1} is {symbol!r} but {where} has "
                                  f"{dictionary[nspecial + i]!r}")
    dim = matrix.shape[1]
    std = float(np.std(matrix.astype(np.float64)))
    if std == 0.0:
        raise EmbeddingsError(f"{flag} {path}: every vector is zero")
    loaded = set()
    scales = {}
    for name, table in tables:
        if id(table) in loaded:
            continue
        if table.embedding_dim != dim:
            raise EmbeddingsError(f"{flag} {path} has {dim}-dimensional vectors but the {name} "
                                  f"embeddings have {table.embedding_dim} dimensions")
        scale = target_std(table.embedding_dim) / std
        with torch.no_grad():
            rows = torch.from_numpy(matrix).to(table.weight) * scale
            table.weight[nspecial:nspecial + len(symbols)] = rows
        loaded.add(id(table))
        scales[name] = scale
    unseen = None
    summary_path = path + ".json"
    if os.path.isfile(summary_path):
        try:
            with open(summary_path, encoding="utf-8") as f:
                unseen = len(json.load(f)["unseen"])
        except (OSError, ValueError, KeyError, TypeError):
            unseen = None
    never = "unknown (no readable " + summary_path + ")" if unseen is None else f"{unseen:,}"
    logger.info(f"{flag}: loaded {len(symbols):,} {dim}-dimensional vectors of {path} into the "
                f"{' and '.join(scales)} embeddings (rows {nspecial}..{nspecial + len(symbols) - 1}, "
                f"scaled to std {target_std(dim):.4g}); {fits - len(symbols):,} appended symbols "
                f"and {nspecial} specials keep their random init; symbols never seen when "
                f"training the vectors: {never}")
    return {"symbols": len(symbols), "dim": dim, "scales": scales, "unseen": unseen}


def task_dict_path(task) -> Optional[str]:
    """``DATA/dict.txt`` of a task whose ``cfg.data`` names the data directories."""
    data = getattr(getattr(task, "cfg", None), "data", None)
    if not data:
        return None
    return os.path.join(data.split(os.pathsep)[0], "dict.txt")
