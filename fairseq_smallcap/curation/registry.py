"""Registries of curation criteria, selected by name from the command line.

Like fairseq's ``register_task``/``register_criterion``, a decorator adds a class under a name;
commands and tasks then pick components with a comma-separated list (``--rules url,langid``,
``--bt-filter-scores dual_xent,copy_rate``). Users add their own criterion in a module of
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
from typing import Dict, List, Sequence

from ..errors import SmallcapError


class CurationConfigError(SmallcapError):
    """An unknown criterion name, or a plugin module that cannot be imported."""


class Registry:
    """Named components of one kind (``kind`` names them in error messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: Dict[str, type] = {}

    def register(self, name: str):
        def decorator(cls):
            if name in self.entries and self.entries[name] is not cls:
                raise CurationConfigError(f"{self.kind} {name!r} is already registered by {self.entries[name]}")
            cls.name = name
            self.entries[name] = cls
            return cls

        return decorator

    def resolve(self, spec, flag: str) -> List[type]:
        """``"a,b"`` (or a list) -> the registered classes, or an error that names ``flag``."""
        names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
        unknown = [n for n in names if n not in self.entries]
        if unknown:
            raise CurationConfigError(
                f"{flag}: unknown {self.kind} {', '.join(map(repr, unknown))} "
                f"(registered: {', '.join(sorted(self.entries))})")
        return [self.entries[n] for n in names]


LINE_RULES = Registry("line rule")
PAIR_SCORES = Registry("pair score")
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
