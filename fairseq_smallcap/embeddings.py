"""``smallcap-embeddings``: cross-lingual skip-gram subword embeddings for initialising a model.

    smallcap-embeddings DATA --dim 128 --out DATA/emb128.vec
    fairseq-train DATA ... --arch smallcap_very_small --init-embeddings DATA/emb128.vec

Unsupervised MT initialises its embedding tables with skip-gram embeddings trained on the
concatenation of both languages' monolingual corpora encoded with the joint BPE (Lample et al.
2018b, "Phrase-Based & Neural Unsupervised Machine Translation", section 4.2; Conneau & Lample
2019, "Cross-lingual Language Model Pretraining", section 5.1, fastText on the joint BPE): the
subword units shared by the languages (digits, names, common pieces) anchor the two
languages in one space. This command trains them with gensim's ``Word2Vec(sg=1)`` on the
encoded training corpora of a ``smallcap-prepare`` directory (``DATA/{lang}/train.bin/.idx``,
token ids of ``DATA/dict.txt``; each sentence fed as its dictionary symbols, ``</s>`` left out),
streamed from the indexed datasets (no copy of the corpus in memory).

Output, in word2vec text format: a first line ``N D``, then one line ``symbol v1 ... vD`` for
each of the N symbols of ``DATA/dict.txt`` in the file's order (the model's embedding rows
``nspecial`` ... ``nspecial + N - 1``). Symbols that never occur in the corpora (or fewer than
``--min-count`` times) get a vector drawn from a normal with the std of the trained vectors
(seeded by ``--seed``). ``FILE.json`` records the run: symbols seen and never seen, sentences,
tokens, seconds and flags. Both are written as ``.partial`` files, then renamed.

The models' ``--init-embeddings FILE`` (``smallcap_transformer``, ``smallcap_bigru``) loads
the file with :func:`fairseq_smallcap.models.pretrained_embeddings.init_embeddings`.
"""
import argparse
import json
import logging
import os
import sys
import time
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cli import configure_logging, default_threads, error_exit_status
from .errors import SmallcapError
from .models.pretrained_embeddings import EmbeddingsError

logger = logging.getLogger("fairseq_smallcap.embeddings")
PROG = "smallcap-embeddings"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", help="a smallcap-prepare directory (dict.txt, {lang}/train.bin/.idx)")
    parser.add_argument("--dim", type=int, required=True, help="embedding dimension")
    parser.add_argument("--out", required=True, help="output file (word2vec text format)")
    parser.add_argument("--langs", default=None,
                        help="comma-separated languages (default: every subdirectory of DATA "
                             "holding train.idx)")
    parser.add_argument("--window", type=int, default=5, help="skip-gram context window")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the corpora")
    parser.add_argument("--min-count", type=int, default=1,
                        help="symbols seen fewer times get a random vector")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="gensim worker threads (1 for a reproducible run)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    return parser


# ---------------------------------------------------------------------------- the corpora
def load_dictionary(dict_path: str):
    """fairseq's Dictionary of ``dict_path``, or :class:`EmbeddingsError` naming the file."""
    from fairseq.data import Dictionary

    if not os.path.isfile(dict_path):
        raise EmbeddingsError(f"no dictionary at {dict_path} (prepare the data with smallcap-prepare)")
    try:
        dictionary = Dictionary.load(dict_path)
    except Exception as e:
        raise EmbeddingsError(f"cannot read the dictionary {dict_path}: {e}") from e
    if len(dictionary) <= dictionary.nspecial:
        raise EmbeddingsError(f"the dictionary {dict_path} is empty")
    return dictionary


def find_langs(data: str, langs: Optional[str]) -> List[str]:
    if langs is not None:
        chosen = [lang.strip() for lang in langs.split(",") if lang.strip()]
        if not chosen:
            raise EmbeddingsError(f"--langs names no language: {langs!r}")
        return chosen
    found = sorted(name for name in os.listdir(data)
                   if os.path.isfile(os.path.join(data, name, "train.idx")))
    if not found:
        raise EmbeddingsError(f"no training data in {data}: no {os.path.join(data, '*', 'train.idx')} "
                              "(prepare the data with smallcap-prepare, or name --langs)")
    return found


def check_index(path: str) -> None:
    """Check the header and length of a fairseq mmap index before fairseq opens it (its
    ``Index`` asserts, then prints a second error from ``__del__``, on a bad file)."""
    import struct

    from fairseq.data.indexed_dataset import MMapIndexedDataset, _code_to_dtype

    try:
        with open(path, "rb") as f:
            header = f.read(26)
    except OSError as e:
        raise EmbeddingsError(f"cannot read {path}: {e.strerror}") from e
    magic = MMapIndexedDataset.Index._HDR_MAGIC
    if (len(header) < 26 or header[:9] != magic or struct.unpack("<Q", header[9:17])[0] != 1
            or header[17] not in _code_to_dtype):
        raise EmbeddingsError(f"cannot read {path}: not a fairseq mmap index (smallcap-prepare "
                              "binarizes with --dataset-impl mmap)")
    count = struct.unpack("<Q", header[18:26])[0]
    if os.path.getsize(path) < 26 + 12 * count:
        raise EmbeddingsError(f"cannot read {path}: truncated ({count:,} sentences announced)")


def open_corpus(prefix: str, dictionary):
    """The fairseq mmap indexed dataset at ``prefix`` (``.bin``/``.idx``), checked."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    for suffix in (".idx", ".bin"):
        if not os.path.isfile(prefix + suffix):
            raise EmbeddingsError(f"no training data: {prefix + suffix} not found")
    check_index(prefix + ".idx")
    try:
        dataset = MMapIndexedDataset(prefix)
        sizes = np.asarray(dataset.sizes, dtype=np.int64)
        itemsize = np.dtype(dataset._index.dtype).itemsize
    except Exception as e:
        raise EmbeddingsError(f"cannot read {prefix}.idx/.bin (not a fairseq mmap indexed dataset?): "
                              f"{e}") from e
    if len(sizes) == 0 or sizes.sum() == 0:
        raise EmbeddingsError(f"empty training corpus: {prefix}.bin has no tokens")
    if os.path.getsize(prefix + ".bin") < int(sizes.sum()) * itemsize:
        raise EmbeddingsError(f"truncated training corpus: {prefix}.bin is smaller than its index "
                              f"{prefix}.idx says")
    return dataset


class EncodedCorpus:
    """A restartable iterable over the sentences of fairseq indexed datasets, each a list of
    dictionary symbols without ``</s>``: what gensim trains on, read from the memory-mapped
    files at every pass."""

    def __init__(self, datasets: Dict[str, object], prefixes: Dict[str, str], dictionary):
        self.datasets = datasets
        self.prefixes = prefixes
        self.symbols = list(dictionary.symbols)
        self.eos = dictionary.eos()
        self.sentences = sum(len(d) for d in datasets.values())
        self.tokens = sum(int(np.asarray(d.sizes, dtype=np.int64).sum()) for d in datasets.values())

    def __iter__(self):
        symbols, eos, n = self.symbols, self.eos, len(self.symbols)
        for lang, dataset in self.datasets.items():
            for i in range(len(dataset)):
                ids = dataset[i].tolist()
                if ids and (min(ids) < 0 or max(ids) >= n):
                    raise EmbeddingsError(f"{self.prefixes[lang]}.bin: sentence {i} has token ids "
                                          f"outside the dictionary (0..{n - 1}): made with another "
                                          "dict.txt?")
                sentence = [symbols[t] for t in ids if t != eos]
                if sentence:
                    yield sentence


def _stable_hash(text: str) -> int:
    """A hash that does not change between interpreter launches (unlike ``hash``), for gensim."""
    return zlib.crc32(text.encode("utf-8"))


def train_vectors(corpus: EncodedCorpus, args):
    """Skip-gram (gensim ``Word2Vec(sg=1)``) on ``corpus``; returns gensim's KeyedVectors."""
    try:
        from gensim.models import Word2Vec
        from gensim.models.callbacks import CallbackAny2Vec
    except ImportError as e:
        raise EmbeddingsError(f"smallcap-embeddings needs gensim: pip install gensim ({e})") from e

    if not logger.isEnabledFor(logging.DEBUG):  # gensim's INFO lines repeat what EpochLogger says
        logging.getLogger("gensim").setLevel(logging.WARNING)

    class EpochLogger(CallbackAny2Vec):
        def __init__(self):
            self.epoch = 0
            self.start = time.time()

        def on_epoch_begin(self, model):
            self.start = time.time()

        def on_epoch_end(self, model):
            self.epoch += 1
            seconds = max(time.time() - self.start, 1e-9)
            logger.info(f"epoch {self.epoch}/{args.epochs}: {corpus.sentences:,} sentences in "
                        f"{seconds:.1f} s ({corpus.sentences / seconds:,.0f} sentences/s)")

    model = Word2Vec(vector_size=args.dim, window=args.window, min_count=args.min_count, sg=1,
                     workers=args.threads, seed=args.seed, epochs=args.epochs, hashfxn=_stable_hash)
    model.build_vocab(corpus_iterable=corpus)
    model.train(corpus_iterable=corpus, total_examples=model.corpus_count, epochs=args.epochs,
                callbacks=[EpochLogger()])
    return model.wv


def write_vectors(path: str, symbols: Sequence[str], wv, seed: int) -> Tuple[np.ndarray, List[str]]:
    """Write the word2vec text file of ``symbols`` (in this order) to ``path``; symbols ``wv``
    lacks get normal vectors with the std of the trained ones. Returns (matrix, unseen)."""
    seen = [s for s in symbols if s in wv.key_to_index]
    if not seen:
        raise EmbeddingsError("no symbol of the dictionary was trained (empty corpora, or "
                              "--min-count above every count)")
    std = float(np.std(np.stack([wv[s] for s in seen]).astype(np.float64)))
    rng = np.random.default_rng(seed)
    matrix = np.empty((len(symbols), wv.vector_size), dtype=np.float32)
    unseen = []
    for i, symbol in enumerate(symbols):
        if symbol in wv.key_to_index:
            matrix[i] = wv[symbol]
        else:
            matrix[i] = rng.normal(0.0, std, wv.vector_size)
            unseen.append(symbol)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(symbols)} {wv.vector_size}\n")
        for symbol, row in zip(symbols, matrix):
            f.write(symbol + " " + " ".join(f"{v:.6g}" for v in row.tolist()) + "\n")
    return matrix, unseen


def make_embeddings(args) -> dict:
    start = time.time()
    if args.dim <= 0:
        raise EmbeddingsError(f"--dim must be positive, got {args.dim}")
    for flag, value in (("--window", args.window), ("--epochs", args.epochs),
                        ("--min-count", args.min_count), ("--threads", args.threads)):
        if value <= 0:
            raise EmbeddingsError(f"{flag} must be positive, got {value}")
    if not os.path.isdir(args.data):
        raise EmbeddingsError(f"data directory not found: {args.data}")
    dict_path = os.path.join(args.data, "dict.txt")
    dictionary = load_dictionary(dict_path)
    langs = find_langs(args.data, args.langs)
    prefixes = {lang: os.path.join(args.data, lang, "train") for lang in langs}
    datasets = {lang: open_corpus(prefix, dictionary) for lang, prefix in prefixes.items()}
    corpus = EncodedCorpus(datasets, prefixes, dictionary)
    logger.info(f"training {args.dim}-dimensional skip-gram embeddings of the {len(dictionary) - dictionary.nspecial:,} "
                f"symbols of {dict_path} on {corpus.sentences:,} sentences ({corpus.tokens:,} tokens "
                f"with </s>) of {','.join(langs)}, {args.threads} thread(s)")
    wv = train_vectors(corpus, args)

    symbols = dictionary.symbols[dictionary.nspecial:]
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise EmbeddingsError(f"--out {args.out}: directory {out_dir} not found")
    _, unseen = write_vectors(args.out + ".partial", symbols, wv, args.seed)
    summary = {
        "data": os.path.abspath(args.data), "dictionary": os.path.abspath(dict_path),
        "langs": langs, "dim": args.dim, "window": args.window, "epochs": args.epochs,
        "min_count": args.min_count, "threads": args.threads, "seed": args.seed,
        "sentences": corpus.sentences, "tokens": corpus.tokens, "symbols": len(symbols),
        "seen": len(symbols) - len(unseen), "unseen": unseen,
        "seconds": round(time.time() - start, 1),
    }
    with open(args.out + ".json.partial", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
    os.replace(args.out + ".partial", args.out)
    os.replace(args.out + ".json.partial", args.out + ".json")
    logger.info(f"{summary['seen']:,} of {len(symbols):,} symbols trained, {len(unseen):,} never seen "
                f"(random vectors); written to {args.out} in {summary['seconds']} s")
    return summary


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        summary = make_embeddings(args)
    except SmallcapError as e:
        return error_exit_status(PROG, e)
    print(f"{summary['seen']:,}/{summary['symbols']:,} symbols seen; written to {args.out} "
          f"in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
