"""Static curation rules for monolingual corpora, one registered class per rule.

The filtering itself is OpusFilter's (Aulamo et al. 2020, "OpusFilter: A Configurable Parallel
Corpus Filtering Toolbox"): length, long words, HTML tags, alphabet ratio,
repetition and language identification (py3langid, the maintained fork of langid.py, Lui &
Baldwin 2012; or Lingua); URLs, e-mail addresses and non-printable characters are regular
expressions (the ``regex`` module). Every rule answers ``reject(text) -> None | detail`` for one line;
:mod:`fairseq_smallcap.curation.static_curator` runs them in order and records the first rule
that rejects a line. The noise rules follow the data filter of MASS's toolkit (Song et al. 2019),
which drops URLs and lines in the wrong language from News Crawl.
"""
from typing import Optional

import regex
from opusfilter.filters import (
    AlphabetRatioFilter, HtmlTagFilter, LengthFilter, LongWordFilter, RepetitionFilter,
)

from .registry import CurationConfigError, register_line_rule


class OpusLineRule:
    """Adapter: one OpusFilter filter applied to single-segment "pairs"."""

    def __init__(self, lang: str, args):
        self.lang = lang
        self.opus_filter = self.build(args)

    def build(self, args):
        raise NotImplementedError

    def detail(self, score) -> str:
        return str(score)

    def reject(self, text: str) -> Optional[str]:
        score = next(self.opus_filter.score([(text,)]))
        return None if self.opus_filter.accept(score) else self.detail(score)


@register_line_rule("length")
class Length(OpusLineRule):
    """Too few or too many words (whitespace-separated)."""

    @staticmethod
    def add_args(parser):
        parser.add_argument("--min-words", type=int, default=1, help="rule length: fewest words kept")
        parser.add_argument("--max-words", type=int, default=150, help="rule length: most words kept")

    def build(self, args):
        return LengthFilter(min_length=args.min_words, max_length=args.max_words, unit="word")

    def detail(self, score):
        return f"{score[0]} words"


@register_line_rule("long_word")
class LongWord(OpusLineRule):
    """A "word" of ``--max-word-chars`` characters or more (hashes, glued tokens, base64)."""

    @staticmethod
    def add_args(parser):
        parser.add_argument("--max-word-chars", type=int, default=40, help="rule long_word: longest word")

    def build(self, args):
        return LongWordFilter(threshold=args.max_word_chars)

    def detail(self, score):
        return f"a word of {score[0]} characters"


class PatternRule:
    """Rejects lines that match ``pattern`` (the ``regex`` module, Unicode classes), saying what
    matched."""

    pattern = ""

    def __init__(self, lang: str, args):
        self.compiled = regex.compile(self.pattern)

    def describe(self, match) -> str:
        return f"matches {match.group(0)[:60]!r}"

    def reject(self, text: str) -> Optional[str]:
        match = self.compiled.search(text)
        return None if match is None else self.describe(match)


@register_line_rule("url")
class Url(PatternRule):
    """A web address (``http://``, ``www.``, or a bare domain with a common TLD and a path)."""

    pattern = r"(?i)\b(?:https?://|ftp://|www\.)\S+|\b[\w-]+\.(?:com|org|net|fr|co\.uk|html?)(?:/\S*)?\b"


@register_line_rule("email")
class Email(PatternRule):
    """An e-mail address."""

    pattern = r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"


@register_line_rule("markup")
class Markup(OpusLineRule):
    """HTML/XML tags (OpusFilter's HtmlTagFilter, BeautifulSoup), character entities, wiki markup."""

    entity_or_wiki = regex.compile(r"&(?:[a-zA-Z]{2,8}|#\d{2,6}|#x[0-9a-fA-F]{2,6});|\[\[|\]\]|\{\{|\}\}")

    def build(self, args):
        return HtmlTagFilter()

    def detail(self, score):
        return "HTML tag"

    def reject(self, text):
        match = self.entity_or_wiki.search(text)
        return f"markup {match.group(0)!r}" if match else super().reject(text)


@register_line_rule("non_printable")
class NonPrintable(PatternRule):
    """Control, format, private-use, surrogate or unassigned code points (tabs included)."""

    pattern = r"[\p{Cc}\p{Cf}\p{Co}\p{Cs}\p{Cn}]"

    def describe(self, match):
        return f"character U+{ord(match.group(0)):04X}"


@register_line_rule("alpha_ratio")
class AlphaRatio(OpusLineRule):
    """Mostly digits, punctuation or symbols: too few alphabetic characters among non-spaces."""

    @staticmethod
    def add_args(parser):
        parser.add_argument("--min-alpha-ratio", type=float, default=0.5,
                            help="rule alpha_ratio: least share of alphabetic characters (spaces excluded)")

    def build(self, args):
        return AlphabetRatioFilter(threshold=args.min_alpha_ratio, exclude_whitespace=True)

    def detail(self, score):
        return f"alphabetic ratio {score[0]:.2f}"


@register_line_rule("repetition")
class Repetition(OpusLineRule):
    """A substring repeated more than ``--max-repeats`` times in a row ("ha ha ha ha", "!!!!!!")."""

    @staticmethod
    def add_args(parser):
        parser.add_argument("--max-repeats", type=int, default=2,
                            help="rule repetition: most consecutive repeats of a substring (3+ chars)")

    def build(self, args):
        return RepetitionFilter(threshold=args.max_repeats, min_length=3, max_length=100)

    def reject(self, text):
        count, repeated = self.opus_filter.get_repetitions(text)
        return None if count < self.opus_filter.threshold else f"{repeated!r} repeated {count} times"


@register_line_rule("langid")
class LanguageId(OpusLineRule):
    """Not identified as the corpus language (py3langid or Lingua through OpusFilter; both ship
    their models, so this works offline)."""

    @staticmethod
    def add_args(parser):
        parser.add_argument("--langid-method", choices=["py3langid", "lingua"], default="py3langid",
                            help="rule langid: the identifier")
        parser.add_argument("--langid-threshold", type=float, default=0.0,
                            help="rule langid: a line is kept when identified as --lang with a "
                                 "confidence above this")
        parser.add_argument("--langid-candidates", default=None,
                            help="rule langid: comma-separated languages to choose among "
                                 "(default: every language the identifier knows)")

    def build(self, args):
        candidates = args.langid_candidates.split(",") if args.langid_candidates else None
        if args.langid_method == "lingua":
            from opusfilter.lid import LinguaFilter

            # Lingua's high-accuracy models for every language take GBs: use them with candidates
            return LinguaFilter(languages=[self.lang], thresholds=[args.langid_threshold],
                                langid_languages=candidates, lingua_mode="high" if candidates else "low")
        from opusfilter.lid import LangidFilter

        opus_filter = LangidFilter(languages=[self.lang], thresholds=[args.langid_threshold],
                                   langid_languages=candidates)
        known = set(opus_filter.identifier.nb_classes)
        for code in [self.lang] + (candidates or []):
            if code not in known:
                raise CurationConfigError(f"rule langid: py3langid does not know the language {code!r} "
                                          f"(--lang / --langid-candidates)")
        return opus_filter

    def reject(self, text):
        """The reason names the language the identifier saw (OpusFilter's score is only 0 then)."""
        score = next(self.opus_filter.score([(text,)]))
        if self.opus_filter.accept(score):
            return None
        if hasattr(self.opus_filter, "lingua_detector"):
            best = self.opus_filter.lingua_detector.compute_language_confidence_values(text)[0]
            seen, confidence = best.language.iso_code_639_1.name.lower(), best.value
        else:
            seen, confidence = self.opus_filter.identifier.classify(text)
        if seen != self.lang:
            return f"identified as {seen} ({float(confidence):.2f}), not {self.lang}"
        return f"{self.lang} confidence {score[0]:.2f} <= --langid-threshold {self.opus_filter.thresholds[0]}"
