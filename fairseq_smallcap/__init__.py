"""fairseq_smallcap: unsupervised translation for small models, as a fairseq user dir.

Load it with ``--user-dir fairseq_smallcap`` (or ``import fairseq_smallcap``): it registers the
``unsupervised_translation`` task, the ``smallcap_transformer`` model with the four Table 1
sizes, the recurrent ``smallcap_bigru`` student and the ``knowledge_distillation`` criterion,
makes fairseq checkpoints load under torch's weights-only loader, and reports bad input as one
clear line (see :mod:`fairseq_smallcap.errors`).
"""
from . import checkpoint_safety, errors

checkpoint_safety.install()
errors.install_excepthook()

from . import criterions, models, tasks  # noqa: E402,F401  (registries)
