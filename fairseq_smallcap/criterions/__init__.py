"""Criterions of fairseq_smallcap (imported for their registry side effects)."""
from . import knowledge_distillation  # noqa: F401
