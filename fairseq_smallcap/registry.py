"""Named components selected from the command line: the one small registry behind curation's
line rules and pair scores and the curriculum's difficulties.

Like fairseq's ``register_task``/``register_criterion``, a decorator adds a class under a name;
commands and tasks then pick components with a comma-separated list (``--rules url,langid``,
``--bt-filter-scores dual_xent,copy_rate``, ``--curriculum-by rarity``). A registry may name a
module of built-in components, imported the first time the registry is read, so that loading the
user dir does not import what only one command uses (OpusFilter for the line rules).
"""
import importlib
from typing import Dict, List, Optional

from .errors import SmallcapError


class ConfigError(SmallcapError):
    """An unknown component name, or a plugin module that cannot be imported."""


class Registry:
    """Named components of one kind (``kind`` names them in error messages)."""

    def __init__(self, kind: str, builtins: Optional[str] = None):
        self.kind = kind
        self.builtins = builtins  # module that registers the built-in components, imported lazily
        self._entries: Dict[str, type] = {}

    @property
    def entries(self) -> Dict[str, type]:
        if self.builtins:
            module, self.builtins = self.builtins, None
            importlib.import_module(module)
        return self._entries

    def register(self, name: str):
        def decorator(cls):
            if name in self._entries and self._entries[name] is not cls:
                raise ConfigError(f"{self.kind} {name!r} is already registered by {self._entries[name]}")
            cls.name = name
            self._entries[name] = cls
            return cls

        return decorator

    def resolve(self, spec, flag: str) -> List[type]:
        """``"a,b"`` (or a list) -> the registered classes, or an error that names ``flag``."""
        names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
        entries = self.entries
        unknown = [n for n in names if n not in entries]
        if unknown:
            raise ConfigError(
                f"{flag}: unknown {self.kind} {', '.join(map(repr, unknown))} "
                f"(registered: {', '.join(sorted(entries))})")
        return [entries[n] for n in names]
