"""fairseq_smallcap: a fairseq user-dir plugin for small unsupervised translation models."""
from setuptools import find_packages, setup

setup(
    name="fairseq_smallcap",
    version="0.1.0",
    description="Unsupervised MT for small models as a fairseq plugin (--user-dir fairseq_smallcap)",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["fairseq_smallcap", "fairseq_smallcap.*"]),
    # fairseq-fixed is installed by `make install` (it needs --no-build-isolation --no-deps).
    install_requires=["sentencepiece", "sacrebleu>=2.0", "numpy", "opusfilter==3.3.1", "py3langid==0.3.0",
                      "xxhash", "regex"],
    # smallcap-embeddings (skip-gram subword embeddings for --init-embeddings) needs gensim.
    extras_require={"embeddings": ["gensim>=4.3"]},
    entry_points={
        "console_scripts": [
            "smallcap-prepare = fairseq_smallcap.prepare:cli_main",
            "smallcap-param-table = fairseq_smallcap.param_table:cli_main",
            "smallcap-train-distributed = fairseq_smallcap.distributed_train:cli_main",
            "smallcap-curate = fairseq_smallcap.curation.static_curator:cli_main",
            "smallcap-back-parallel = fairseq_smallcap.back_parallel:cli_main",
            "smallcap-teacher-topk = fairseq_smallcap.distillation.teacher_topk:cli_main",
            "smallcap-seqkd = fairseq_smallcap.distillation.sequence_kd:cli_main",
            "smallcap-cut-layers = fairseq_smallcap.distillation.cut_layers:cli_main",
            "smallcap-embeddings = fairseq_smallcap.embeddings:cli_main",
        ]
    },
)
