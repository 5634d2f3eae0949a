"""fairseq_smallcap: unsupervised translation for small models, as a fairseq user dir.

Load it with ``--user-dir fairseq_smallcap`` (or ``import fairseq_smallcap``): it registers the
``unsupervised_translation`` task, the ``smallcap_transformer`` model with the four Table 1
sizes, the recurrent ``smallcap_bigru`` student and the ``knowledge_distillation`` criterion,
and makes fairseq checkpoints load under torch's weights-only loader -- on import, nothing else: no
process-wide hook, and no optional dependency (OpusFilter, language identifiers, plotting) is
imported until a command uses it. Building one of its models or its criterion
registers an exit handler that stops fairseq's batch-prefetching thread, so a run stopped
mid-epoch exits 0 (see :mod:`fairseq_smallcap.clean_exit`). Bad input is reported as one clear
line (see :mod:`fairseq_smallcap.errors`).
"""
from . import checkpoint_safety

checkpoint_safety.install()

from . import criterions, models, tasks  # noqa: E402,F401  (registries)
