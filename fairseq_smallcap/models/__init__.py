"""Models of fairseq_smallcap (imported for their registry side effects)."""
from . import smallcap_transformer  # noqa: F401
