import pytest

import fairseq_smallcap  # noqa: F401
from fairseq_smallcap.models.smallcap_transformer import TABLE1_SIZES
from fairseq_smallcap.param_table import count_parameters, table


@pytest.mark.parametrize("arch", list(TABLE1_SIZES))
def test_table1_parameter_counts_within_3_percent(arch):
    size = TABLE1_SIZES[arch]
    params = count_parameters(arch, size["vocab"])
    assert abs(params / size["params"] - 1) < 0.03, (arch, params)


def test_architecture_follows_table1_and_stays_overridable():
    from argparse import Namespace

    from fairseq.models import ARCH_CONFIG_REGISTRY

    args = Namespace()
    ARCH_CONFIG_REGISTRY["smallcap_medium"](args)
    assert (args.encoder_layers, args.encoder_embed_dim, args.encoder_attention_heads) == (4, 420, 3)
    assert args.decoder_layers == 6 and args.encoder_ffn_embed_dim == 1680
    assert args.activation_fn == "gelu" and args.dropout == 0.1
    assert args.encoder_learned_pos and args.max_source_positions == 512
    assert args.share_decoder_input_output_embed and not args.share_all_embeddings
    shared = Namespace(share_all_embeddings=True, dropout=0.3)
    ARCH_CONFIG_REGISTRY["smallcap_small"](shared)
    assert shared.share_all_embeddings and shared.dropout == 0.3
    # sharing all embeddings removes one table
    assert count_parameters("smallcap_small", 1000, {"share_all_embeddings": True}) < count_parameters("smallcap_small", 1000)


def test_param_table_cli_prints_all_sizes(capsys):
    from fairseq_smallcap.param_table import cli_main

    cli_main([])
    out = capsys.readouterr().out
    for arch in TABLE1_SIZES:
        assert arch in out
    rows = table()
    assert len(rows) == 4
