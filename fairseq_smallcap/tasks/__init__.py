"""Tasks of fairseq_smallcap (imported for their registry side effects)."""
from . import unsupervised_translation  # noqa: F401
