"""Moses tokenization + the study's BPE codes, as MASS/XLM preprocess News Crawl.

    python tokenize_bpe.py --lang en --codes ../shared/data/wmt14-enfr/bpe55k/codes.gz \
        --input news.en --output news.tok.bpe.en

Tokenizes with the Moses tokenizer (``-no-escape``, as XLM's ``tokenize.sh``; the
``opus-fast-mosestokenizer`` package) and applies the joint BPE ``codes`` of the study
(fastBPE format, ``a b count`` per line) with subword-nmt, which applies the same merges. Lines
are never dropped: an empty input line gives an empty output line, so that line numbers stay
aligned with the input (and with the curation's rejects file). Streams its input.
"""
import argparse
import gzip
import io
import sys

from mosestokenizer import MosesTokenizer
from subword_nmt.apply_bpe import BPE


def load_codes(path: str) -> BPE:
    """fastBPE codes (``a b count``) -> subword-nmt's format (``#version: 0.2``, ``a b``)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        merges = [" ".join(line.split()[:2]) for line in f if line.strip()]
    return BPE(io.StringIO("#version: 0.2\n" + "\n".join(merges) + "\n"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", required=True, help="Moses tokenizer language (en, fr)")
    parser.add_argument("--codes", required=True, help="the study's BPE codes (codes.gz)")
    parser.add_argument("--input", required=True, help="raw text, one sentence per line")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    bpe = load_codes(args.codes)
    tokenizer = MosesTokenizer(args.lang)
    lines = 0
    with open(args.input, encoding="utf-8", errors="strict") as src, open(args.output, "w", encoding="utf-8") as out:
        for line_no, line in enumerate(src, 1):
            try:
                tokens = tokenizer.tokenize(line.strip())
            except Exception as e:  # the tokenizer is C++; name the line that broke it
                sys.exit(f"tokenize_bpe.py: error: {args.input}:{line_no}: {e}")
            out.write(bpe.process_line(" ".join(tokens)) + "\n")
            lines += 1
    print(f"{args.input}: {lines} lines tokenized and BPE-split -> {args.output}")


if __name__ == "__main__":
    main()
