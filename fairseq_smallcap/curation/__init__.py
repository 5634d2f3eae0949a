"""Data-driven curation for small unsupervised MT models: static corpus curation
(:mod:`.static_curator`, ``smallcap-curate``), registered line rules and back-translation pair
scores (:mod:`.registry`)."""
from .registry import LINE_RULES, PAIR_SCORES, import_plugins, register_line_rule, register_pair_score  # noqa: F401
from . import line_rules  # noqa: F401,E402  (built-in rules)
