"""examples/wmt14_enfr/run.sh end to end on a small slice (Multi30k text standing in for News
Crawl, 20 newstest lines, a 32-dim model, a few updates): every stage runs and the table is
printed. The numbers of this slice mean nothing and are never reported."""
import gzip
import os

import pytest

from conftest import BIN, MULTI30K, REPO_ROOT, run

WMT = MULTI30K.parent / "wmt14-enfr"
TINY = ("--cpu --encoder-embed-dim 32 --decoder-embed-dim 32 --encoder-ffn-embed-dim 64 "
        "--decoder-ffn-embed-dim 64 --decoder-layers 1 --num-workers 0 --max-valid-steps 1")


@pytest.mark.parametrize("system", ["baseline", "curated"])
def test_wmt14_recipe_smoke(tmp_path, system):
    news = {}
    for lang, lines in (("en", slice(0, 150)), ("fr", slice(14500, 14650))):  # unsupervised split
        with gzip.open(MULTI30K / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            text = f.read().splitlines()[lines]
        news[lang] = tmp_path / f"news.{lang}"
        news[lang].write_text("\n".join(text) + "\n", encoding="utf-8")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = run(["bash", REPO_ROOT / "examples" / "wmt14_enfr" / "run.sh", "--news-en", news["en"],
                  "--news-fr", news["fr"], "--system", system, "--work", tmp_path / "work", "--wmt-dir", WMT,
                  "--mass-updates", "2", "--updates", "4", "--max-tokens", "1500", "--eval-lines", "20",
                  "--extra", TINY], env=env)
    assert f"| this run ({system}, first 20 lines only) |" in result.stdout
    assert "| Table 2 | 0.97 -> 6.45 |" in result.stdout
    run_dir = tmp_path / "work" / f"smallcap_very_small-{system}"
    for split in ("valid", "test"):
        for pair in ("en-fr", "fr-en"):
            assert len((run_dir / f"{split}.{pair}.hyp").read_text().splitlines()) == 20
    if system == "curated":
        assert (run_dir / "bp1" / "summary.json").exists()
        assert (tmp_path / "work" / "bpe55k-curated" / "data" / "rejects.en.tsv").exists()
