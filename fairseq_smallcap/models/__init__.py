"""Models of fairseq_smallcap (imported for their registry side effects)."""
from . import smallcap_transformer  # noqa: F401
from . import smallcap_bigru  # noqa: F401
