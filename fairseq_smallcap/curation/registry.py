"""The registries of curation criteria (:class:`fairseq_smallcap.registry.Registry`): line rules
(built in: :mod:`.line_rules`, imported when a command first reads the registry) and
back-translation pair scores (:mod:`.pair_scores`). Users add their own criterion in a module of
their own and load it with ``--curation-plugins my_module`` (a module name or a ``.py`` path)::

    from fairseq_smallcap.curation import register_line_rule

    @register_line_rule("no_digits_only")
    class NoDigitsOnly:
        def __init__(self, lang, args):
            pass
        def reject(self, text):
            return "digits only" if text.strip().isdigit() else None
"""
import importlib
import importlib.util
import os
import sys
from typing import Sequence

from ..registry import ConfigError, Registry

CurationConfigError = ConfigError  # the name curation code and users know

LINE_RULES = Registry("line rule", builtins="fairseq_smallcap.curation.line_rules")
PAIR_SCORES = Registry("pair score", builtins="fairseq_smallcap.curation.pair_scores")
register_line_rule = LINE_RULES.register
register_pair_score = PAIR_SCORES.register


def import_plugins(specs: Sequence[str], flag: str = "--curation-plugins") -> None:
    """Import user modules (dotted names or ``.py`` paths) so that their criteria register."""
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        try:
            if spec.endswith(".py") or os.sep in spec:
                if not os.path.isfile(spec):
                    raise CurationConfigError(f"{flag}: {spec}: no such file")
                name = "smallcap_plugin_" + os.path.splitext(os.path.basename(spec))[0]
                if name in sys.modules:
                    continue
                module_spec = importlib.util.spec_from_file_location(name, spec)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[name] = module
                module_spec.loader.exec_module(module)
            else:
                importlib.import_module(spec)
        except CurationConfigError:
            raise
        except Exception as e:  # a broken plugin: say which one
            raise CurationConfigError(f"{flag}: cannot import {spec}: {type(e).__name__}: {e}") from e
