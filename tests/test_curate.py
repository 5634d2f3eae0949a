"""smallcap-curate: each rule on crafted lines, the count invariant, shards, workers, errors."""
import json

import pytest

from conftest import run, tool

LINES = [
    b"Two dogs play on the beach.",                       # 1 kept
    b"two  dogs PLAY on   the beach.",                    # 2 duplicate of 1 (case, spacing)
    b"",                                                  # 3 empty
    b"   ",                                               # 4 empty
    b"See http://example.com/page for details",           # 5 url
    b"Write to bob@example.org today",                    # 6 email
    b"<b>bold</b> text in a tag",                         # 7 markup
    b"Fish &amp; chips on the table",                     # 8 markup (entity)
    b"1234 5678 90 !! ?? 42",                             # 9 alpha_ratio
    b"ha ha ha ha ha ha ha",                              # 10 repetition
    b"Ceci est une phrase en fran\xc3\xa7ais, pas en anglais.",  # 11 langid
    b"A tab\there in the middle of the line",             # 12 non_printable
    b"bad \xff\xfe bytes in the line",                    # 13 invalid_utf8
    b"word " * 200,                                       # 14 length
    b"A " + b"x" * 60 + b" hash in a sentence",           # 15 long_word
    b"A man rides a brown horse.",                        # 16 kept
    b"A MAN rides a brown horse.",                        # 17 duplicate of 16
    b"A woman reads a book in the park.",                 # 18 kept
]
EXPECTED = {2: "duplicate", 3: "empty", 4: "empty", 5: "url", 6: "email", 7: "markup", 8: "markup",
            9: "alpha_ratio", 10: "repetition", 11: "langid", 12: "non_printable", 13: "invalid_utf8",
            14: "length", 15: "long_word", 17: "duplicate"}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "crafted.en"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    return path


def curate(corpus, tmp_path, *extra, name="out", check=True):
    out, rej = tmp_path / f"{name}.en", tmp_path / f"{name}.rejects.tsv"
    result = run([tool("smallcap-curate"), "--lang", "en", "--input", corpus, "--output", out,
                  "--rejects", rej, *extra], check=check)
    return result, out, rej


def read_rejects(path):
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    return {int(r[0]): r for r in rows}


def test_every_rule_rejects_its_line_and_counts_add_up(corpus, tmp_path):
    result, out, rej = curate(corpus, tmp_path)
    rejects = read_rejects(rej)
    assert {n: r[1] for n, r in rejects.items()} == EXPECTED
    kept = out.read_text(encoding="utf-8").splitlines()
    assert kept == ["Two dogs play on the beach.", "A man rides a brown horse.", "A woman reads a book in the park."]
    assert len(kept) + len(rejects) == len(LINES)
    assert rejects[2][2] == "of line 1" and rejects[17][2] == "of line 16"
    assert rejects[13][3] == "bad \\xff\\xfe bytes in the line"  # undecodable bytes kept, escaped
    assert rejects[12][3] == "A tab\\there in the middle of the line"
    assert rejects[11][2].startswith("identified as fr (") and rejects[11][2].endswith("), not en")
    summary = json.loads((tmp_path / "out.en.summary.json").read_text())
    assert summary["kept"] == 3 and summary["rejected_total"] == 15 and summary["lines_in_shard"] == 18
    assert summary["rejected"]["duplicate"] == 2 and summary["rejected"]["empty"] == 2
    assert "kept 3 + rejected 15 = 18" in result.stdout


def test_rules_can_be_chosen_and_empty_or_invalid_lines_are_always_rejected(corpus, tmp_path):
    _, out, rej = curate(corpus, tmp_path, "--rules", "url")
    rejects = read_rejects(rej)
    # the e-mail line's domain is a URL too
    assert sorted(r[1] for r in rejects.values()) == ["empty", "empty", "invalid_utf8", "url", "url"]
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(LINES) - 5


def test_shards_partition_the_corpus_and_deduplicate_across_shards(corpus, tmp_path):
    _, whole, _ = curate(corpus, tmp_path, name="whole")
    kept, total = [], 0
    for shard in range(3):
        _, out, _ = curate(corpus, tmp_path, "--num-shards", "3", "--shard-id", str(shard), name=f"s{shard}")
        summary = json.loads((tmp_path / f"s{shard}.en.summary.json").read_text())
        assert summary["kept"] + summary["rejected_total"] == summary["lines_in_shard"]
        total += summary["lines_in_shard"]
        kept += out.read_text(encoding="utf-8").splitlines()
    assert total == len(LINES)
    assert sorted(kept) == sorted(whole.read_text(encoding="utf-8").splitlines())


def test_workers_give_the_same_result_in_the_same_order(corpus, tmp_path):
    _, one, rej_one = curate(corpus, tmp_path, name="one")
    _, two, rej_two = curate(corpus, tmp_path, "--workers", "2", "--chunk-lines", "3", name="two")
    assert one.read_bytes() == two.read_bytes() and rej_one.read_bytes() == rej_two.read_bytes()


def test_a_plugin_rule_is_selected_by_name(corpus, tmp_path):
    plugin = tmp_path / "my_rules.py"
    plugin.write_text(
        "from fairseq_smallcap.curation import register_line_rule\n"
        "@register_line_rule('mentions_horse')\n"
        "class MentionsHorse:\n"
        "    def __init__(self, lang, args):\n"
        "        pass\n"
        "    def reject(self, text):\n"
        "        return 'horse' if 'horse' in text.lower() else None\n")
    _, out, rej = curate(corpus, tmp_path, "--curation-plugins", plugin, "--rules", "mentions_horse,duplicate")
    reasons = {n: r[1] for n, r in read_rejects(rej).items()}
    assert reasons[16] == reasons[17] == "mentions_horse"
    assert "horse" not in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("args,message", [
    (["--rules", "url,nope"], "--rules: unknown line rule 'nope'"),
    (["--num-shards", "2", "--shard-id", "2"], "--shard-id 2 must be in [0, --num-shards 2)"),
    (["--curation-plugins", "/no/such/plugin.py"], "--curation-plugins: /no/such/plugin.py: no such file"),
])
def test_bad_flags_give_one_clear_line(corpus, tmp_path, args, message):
    result, out, _ = curate(corpus, tmp_path, *args, check=False)
    assert result.returncode == 2
    assert f"smallcap-curate: error: {message}" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_missing_input_is_named(tmp_path):
    result, _, _ = curate(tmp_path / "missing.en", tmp_path, check=False)
    assert result.returncode == 2 and f"--input {tmp_path / 'missing.en'}: no such file" in result.stderr
