"""Data-driven curation for small unsupervised MT models: static corpus curation
(:mod:`.static_curator`, ``smallcap-curate``), registered line rules and back-translation pair
scores (:mod:`.registry`). Importing this package imports neither OpusFilter nor a language
identifier: the built-in line rules load when a command first reads ``LINE_RULES``."""
from .registry import LINE_RULES, PAIR_SCORES, import_plugins, register_line_rule, register_pair_score  # noqa: F401
