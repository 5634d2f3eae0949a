"""fairseq_smallcap: a fairseq user-dir plugin for small unsupervised translation models."""
from setuptools import find_packages, setup

setup(
    name="fairseq_smallcap",
    version="0.1.0",
    description="Unsupervised MT for small models as a fairseq plugin (--user-dir fairseq_smallcap)",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["fairseq_smallcap", "fairseq_smallcap.*"]),
    package_data={"fairseq_smallcap.compression": ["ipq_config.yaml"]},
    # fairseq-fixed is installed by `make install` (it needs --no-build-isolation --no-deps).
    # Loading the user dir needs only these; each extra is imported where it is used.
    install_requires=["sentencepiece", "sacrebleu>=2.0", "numpy"],
    extras_require={
        # smallcap-curate: OpusFilter's filters, regular expressions, deduplication hashes
        "curation": ["opusfilter==3.3.1", "regex", "xxhash"],
        # its language-identification rule (OpusFilter 3.3.1 needs py3langid < 0.4)
        "langid": ["py3langid==0.3.0"],
        # smallcap-curate's default engine (--executor local|slurm|ray): a datatrove pipeline
        "datatrove": ["datatrove==0.10.1", "tokenizers==0.23.3"],  # its dedup module imports tokenizers
        # smallcap-embeddings (skip-gram subword embeddings for --init-embeddings)
        "embeddings": ["gensim>=4.3"],
        # smallcap-export-ct2, smallcap-translate (CTranslate2 inference); pinned: the export adds
        # our model name to the fairseq converter's internal set of supported models
        "ct2": ["ctranslate2==4.8.5"],
        # the benchmarks' plots
        "plot": ["matplotlib"],
        # the WMT14 recipe (examples/wmt14_enfr): Moses tokenizer, subword-nmt BPE
        "wmt14": ["opus-fast-mosestokenizer", "subword-nmt"],
    },
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
            "smallcap-export-ct2 = fairseq_smallcap.compression.ct2_export:cli_main",
            "smallcap-translate = fairseq_smallcap.compression.translate:cli_main",
            "smallcap-prune-rounds = fairseq_smallcap.compression.prune_cli:rounds_main",
            "smallcap-prune-finalize = fairseq_smallcap.compression.prune_cli:finalize_main",
            "smallcap-prune-structured = fairseq_smallcap.compression.structured_cli:cli_main",
            "smallcap-lowrank = fairseq_smallcap.compression.lowrank_cli:cli_main",
            "smallcap-baseline-decode = fairseq_smallcap.compression.baselines:cli_main",
        ]
    },
)
