"""``smallcap-translate``: raw text through a CTranslate2 model made by ``smallcap-export-ct2``.

    smallcap-translate --model MODEL_DIR -s en -t fr < input.en > output.fr
    smallcap-translate --model MODEL_DIR -s fr -t en --input test.fr --output test.en --beam 1

CTranslate2 (Klein et al. 2020, OpenNMT's inference engine) with 8-bit weights where the
model was exported so ("Pieces of eight", Quinn & Ballesteros 2018). Each input line is
normalised and cut into pieces by the data's sentencepiece model (as ``smallcap-prepare`` did),
given the source language token first and ``</s>`` last, and translated with the target language
token as the decoder's first token (``target_prefix``), as fairseq's ``unsupervised_translation``
task does; the language tokens, ``<mask>`` and ``<s>`` are left out of the output and the pieces
joined back (fairseq's ``--post-process sentencepiece``). ``--beam 1`` is greedy search; at
float32 it gives ``fairseq-generate --beam 1``'s hypotheses (``--max-len`` is its
``--max-len-b``, with ``--max-len-a 0``).

Exactly one output line per input line: an empty (or blank) line gives an empty line, and only
``\\n`` ends a line (a ``\\r`` before it is dropped). Output goes to stdout, or to ``--output``
through a temporary file renamed at the end. With ``--input FILE``, progress goes to stderr.
"""
import argparse
import json
import logging
import os
import sys
import tempfile
import time
from typing import Iterable, Iterator, List, Optional, Sequence

from ..cli import configure_logging, default_threads, error_exit_status
from ..errors import SmallcapError
from ..prepare.spm import normalize_spaces  # what smallcap-prepare encoded
from .ct2_export import METADATA, import_ctranslate2

logger = logging.getLogger("fairseq_smallcap.compression.translate")
PROG = "smallcap-translate"
PROGRESS_SECONDS = 10.0
# tokens fairseq's generator strips from its output (the task's never_generated and </s>)
SPECIAL_OUTPUT = ("<s>", "</s>", "<mask>", "<blank>", "<pad>")


class TranslateError(SmallcapError):
    """A model directory, language or option smallcap-translate cannot use."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="a model directory written by smallcap-export-ct2")
    parser.add_argument("-s", "--source-lang", required=True, help="the input's language")
    parser.add_argument("-t", "--target-lang", required=True, help="the language to produce")
    parser.add_argument("--input", default="-", help="input text file, one sentence a line (- for stdin)")
    parser.add_argument("--output", default="-", help="output file (- for stdout)")
    parser.add_argument("--beam", type=int, default=5, help="beam size (1: greedy search)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch")
    parser.add_argument("--max-len", type=int, default=200,
                        help="at most this many target pieces (fairseq-generate's --max-len-b)")
    parser.add_argument("--lenpen", type=float, default=1.0,
                        help="length penalty of beam search (fairseq-generate's --lenpen)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of each batch's computation (CTranslate2's intra_threads; 0: "
                             "CTranslate2's default; default: the CPUs this process may use, divided by "
                             "--inter-threads)")
    parser.add_argument("--inter-threads", type=int, default=1,
                        help="batches translated in parallel, each with --threads threads (CTranslate2's "
                             "inter_threads; the weights are shared). On the 2-core machine of "
                             "benchmarks/README.md, int8 and int16 models ran ~7x slower with --threads 2 "
                             "than with 1, and --threads 1 --inter-threads 2 was the fastest")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--compute-type", default="default",
                        help="CTranslate2 compute type (default: the exported weights' type, or the "
                             "nearest the device supports)")
    return parser


# ---------------------------------------------------------------------------- the model
class CT2Model:
    """An exported model: the CTranslate2 translator, the sentencepiece model and the language
    tokens, with :meth:`translate` from raw sentences to raw sentences."""

    def __init__(self, model_dir: str, device: str = "cpu", compute_type: str = "default", threads: int = 1,
                 inter_threads: int = 1):
        ctranslate2 = import_ctranslate2()
        import sentencepiece as spm

        meta_path = os.path.join(model_dir, METADATA)
        if not os.path.isdir(model_dir):
            raise TranslateError(f"model directory not found: {model_dir}")
        if not os.path.isfile(meta_path):
            raise TranslateError(f"{model_dir} is not a model exported by smallcap-export-ct2 (no {METADATA})")
        try:
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
            self.lang_tokens = dict(self.meta["lang_tokens"])
            spm_path = os.path.join(model_dir, self.meta["spm_model"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TranslateError(f"cannot read {meta_path}: {e}") from e
        if not os.path.isfile(spm_path):
            raise TranslateError(f"no sentencepiece model at {spm_path}")
        if threads < 0:
            raise TranslateError(f"--threads must be 0 (CTranslate2's default) or more, got {threads}")
        if inter_threads < 1:
            raise TranslateError(f"--inter-threads must be at least 1, got {inter_threads}")
        self.sp = spm.SentencePieceProcessor(model_file=spm_path)
        try:
            self.translator = ctranslate2.Translator(model_dir, device=device, compute_type=compute_type,
                                                     inter_threads=inter_threads, intra_threads=threads)
        except (RuntimeError, ValueError) as e:
            raise TranslateError(f"cannot load the CTranslate2 model {model_dir}: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        self.strip = set(SPECIAL_OUTPUT) | set(self.lang_tokens.values())
        self.max_source_tokens = int(self.meta.get("max_source_positions", 1024))
        self.max_target_positions = int(self.meta.get("max_target_positions", 1024))

    def check_langs(self, source_lang: str, target_lang: str) -> None:
        for flag, lang in (("-s/--source-lang", source_lang), ("-t/--target-lang", target_lang)):
            if lang not in self.lang_tokens:
                raise TranslateError(f"unknown language {lang!r} for {flag}: the model knows "
                                     f"{','.join(sorted(self.lang_tokens))}")
        if source_lang == target_lang:
            raise TranslateError(f"-s and -t are both {source_lang!r}")

    def source_tokens(self, sentence: str, source_lang: str) -> List[str]:
        """``[__src__, pieces..., </s>]`` as fairseq's binarized source (unknown pieces as
        ``<unk>``), or ``[]`` for a sentence without pieces."""
        ids = self.sp.encode(normalize_spaces(sentence), out_type=int)
        if not ids:
            return []
        unk = self.sp.unk_id()
        pieces = ["<unk>" if i == unk else self.sp.id_to_piece(i) for i in ids]
        limit = self.max_source_tokens - 2
        if len(pieces) > limit:
            logger.warning(f"a sentence of {len(pieces)} pieces is cut to the model's {limit}")
            pieces = pieces[:limit]
        return [self.lang_tokens[source_lang], *pieces, "</s>"]

    def detokenize(self, tokens: Sequence[str]) -> str:
        """fairseq's ``--post-process sentencepiece`` of the hypothesis without special tokens."""
        text = " ".join(token for token in tokens if token not in self.strip)
        return text.replace(" ", "").replace("\u2581", " ").strip()

    def translate(self, sentences: Iterable[str], source_lang: str, target_lang: str, beam: int = 5,
                  batch_size: int = 32, max_len: int = 200, lenpen: float = 1.0) -> Iterator[str]:
        """Translate ``sentences`` (raw text, lazily), yielding one line for each, in order."""
        self.check_langs(source_lang, target_lang)
        if beam < 1:
            raise TranslateError(f"--beam must be at least 1, got {beam}")
        if batch_size < 1:
            raise TranslateError(f"--batch-size must be at least 1, got {batch_size}")
        if max_len < 1:
            raise TranslateError(f"--max-len must be at least 1, got {max_len}")
        # fairseq: min(max_len_a * src_len + max_len_b, max_decoder_positions - 1)
        max_len = min(max_len, self.max_target_positions - 1)
        prefix = [self.lang_tokens[target_lang]]
        chunk: List[List[str]] = []

        def flush(chunk):
            todo = [tokens for tokens in chunk if tokens]
            results = iter(self.translator.translate_batch(
                todo, target_prefix=[prefix] * len(todo), max_batch_size=batch_size, beam_size=beam,
                length_penalty=lenpen, max_decoding_length=max_len, min_decoding_length=1,
                max_input_length=0, suppress_sequences=[["<blank>"]],
            ) if todo else ())
            for tokens in chunk:
                yield self.detokenize(next(results).hypotheses[0]) if tokens else ""

        for sentence in sentences:
            chunk.append(self.source_tokens(sentence, source_lang))
            if len(chunk) >= 16 * batch_size:  # CTranslate2 sorts each chunk by length
                yield from flush(chunk)
                chunk = []
        if chunk:
            yield from flush(chunk)


# ---------------------------------------------------------------------------- input and output
def read_lines(stream, name: str) -> Iterator[str]:
    """The lines of a binary stream as text, split on ``\\n`` only (``\\r\\n`` too)."""
    for number, raw in enumerate(stream, 1):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TranslateError(f"{name}: line {number} is not valid UTF-8 ({e.reason})") from e


def count_lines(path: str) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def with_progress(lines: Iterable[str], total: int, name: str) -> Iterator[str]:
    start = last = time.time()
    done = 0
    for line in lines:
        yield line
        done += 1
        now = time.time()
        if now - last >= PROGRESS_SECONDS:
            last = now
            logger.info(f"{name}: {done:,}/{total:,} lines ({done / (now - start):,.1f} lines/s)")
    seconds = max(time.time() - start, 1e-9)
    logger.info(f"{name}: {done:,} lines translated in {seconds:.1f} s ({done / seconds:,.1f} lines/s)")


def run(args) -> int:
    if args.threads is None:  # the CPUs shared among the parallel batches (CT2Model checks both)
        args.threads = max(1, default_threads() // max(1, args.inter_threads))
    if args.input != "-" and not os.path.isfile(args.input):
        raise TranslateError(f"input file not found: {args.input}")
    out_dir = None
    if args.output != "-":
        out_dir = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(out_dir):
            raise TranslateError(f"--output {args.output}: directory {out_dir} not found")
    model = CT2Model(args.model, args.device, args.compute_type, args.threads, args.inter_threads)
    model.check_langs(args.source_lang, args.target_lang)

    in_stream = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    tmp_path = None
    try:
        lines = read_lines(in_stream, "stdin" if args.input == "-" else args.input)
        hypotheses = model.translate(lines, args.source_lang, args.target_lang, args.beam,
                                     args.batch_size, args.max_len, args.lenpen)
        if args.input != "-":
            hypotheses = with_progress(hypotheses, count_lines(args.input), args.input)
        if out_dir is None:
            out = sys.stdout.buffer
        else:
            fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(args.output)}.partial-", dir=out_dir)
            out = open(fd, "wb")
        written = 0
        try:
            for hypothesis in hypotheses:
                out.write(hypothesis.replace("\r", " ").replace("\n", " ").encode("utf-8") + b"\n")
                written += 1
        finally:
            if out is sys.stdout.buffer:
                out.flush()
            else:
                out.close()
        if tmp_path is not None:
            os.replace(tmp_path, args.output)
            tmp_path = None
    finally:
        if in_stream is not sys.stdin.buffer:
            in_stream.close()
        if tmp_path is not None and os.path.exists(tmp_path):
            os.remove(tmp_path)
    return written


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(sys.stderr)  # stdout holds the translations
    try:
        run(args)
    except SmallcapError as e:
        if os.environ.get("SMALLCAP_TRACEBACK"):
            raise
        return error_exit_status(PROG, e)
    except BrokenPipeError:  # the reader went away (| head): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
