"""Prompt exactness: the shared prefix is exactly N tokens and the same ids open every prompt."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefixbench.corpus import DEFAULT_QUESTIONS
from prefixbench.prompts import (
    PrefixMismatch,
    Regime,
    aligned_length,
    build_regime_prompts,
    expected_cached_tokens,
    read_prompts,
    write_jsonl,
)


@pytest.mark.parametrize("n_tokens", [128, 512, 1024])
def test_shared_prefix_is_exact_and_identical(smollm2_tokenizer, n_tokens):
    tok = smollm2_tokenizer
    recs = build_regime_prompts(tok, Regime("r", n_tokens, "rag_document", (100,)), DEFAULT_QUESTIONS, 128, True, 7)
    assert len(recs) == len(DEFAULT_QUESTIONS)
    heads = {tuple(tok.encode(r["prompt"])[:n_tokens]) for r in recs}
    assert len(heads) == 1, "every prompt must start with the same token ids"
    prefix_text = recs[0]["prompt"].split("\nQ: ")[0]
    assert len(tok.encode(prefix_text)) == n_tokens
    for r in recs:
        assert r["prompt"].endswith(f"\nQ: {r['question']}\nA:")
        assert r["prompt_len_tokens"] == len(tok.encode(r["prompt"]))
        assert r["prefix_len_tokens"] == n_tokens


def test_reuse_fraction_and_unique_prefixes(smollm2_tokenizer):
    tok = smollm2_tokenizer
    qs = DEFAULT_QUESTIONS[:10]
    recs = build_regime_prompts(tok, Regime("r", 256, "chat_policy", (100, 50, 0)), qs, 128, True, 3)
    by = {u: [r for r in recs if r["reuse_pct"] == u] for u in (100, 50, 0)}
    assert [sum(r["prefix_group"] == "shared" for r in by[u]) for u in (100, 50, 0)] == [10, 5, 0]
    uniques = [r for r in recs if r["prefix_group"] != "shared"]
    first_blocks = {tuple(tok.encode(r["prompt"])[:8]) for r in uniques}
    assert len(first_blocks) == len(uniques), "unique prefixes must differ from their first tokens"
    shared_head = tuple(tok.encode(by[100][0]["prompt"])[:8])
    assert shared_head not in first_blocks
    for r in uniques:
        assert len(tok.encode(r["prompt"].split("\nQ: ")[0])) == 256


def test_expected_cached_tokens_rules(smollm2_tokenizer):
    recs = build_regime_prompts(smollm2_tokenizer, Regime("r", 256, "chat_policy", (100,)), DEFAULT_QUESTIONS[:4], 128, True, 1)
    assert [r["expected_cached_tokens"] for r in recs] == [0, 256, 256, 256]  # first request of a prefix misses
    assert expected_cached_tokens(256, 257, 128) == 256
    assert expected_cached_tokens(256, 256, 128) == 128  # the last prompt token is always recomputed
    assert expected_cached_tokens(300, 320, 128) == 256  # only whole blocks
    assert aligned_length(300, 128, True) == 256 and aligned_length(300, 128, False) == 300
    assert aligned_length(100, 128, True) == 128


def test_deterministic(smollm2_tokenizer):
    a = build_regime_prompts(smollm2_tokenizer, Regime("r", 128, "chat_policy", (50,)), DEFAULT_QUESTIONS[:6], 128, True, 5)
    b = build_regime_prompts(smollm2_tokenizer, Regime("r", 128, "chat_policy", (50,)), DEFAULT_QUESTIONS[:6], 128, True, 5)
    assert a == b


class MergingTokenizer:
    """A test double whose 'BPE' merges the prefix's last character with the join, the classic trap."""

    def encode(self, text, add_special_tokens=True):
        ids, i = [], 0
        while i < len(text):
            if text[i] != "\n" and text[i + 1 : i + 2] == "\n":
                ids.append(1000 + ord(text[i]))  # char + newline merge into one token
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return ids

    def decode(self, ids):
        return "".join(chr(i - 1000) + "\n" if i >= 1000 else chr(i) for i in ids)


def test_bpe_merge_at_join_fails_loudly():
    with pytest.raises(PrefixMismatch):
        build_regime_prompts(MergingTokenizer(), Regime("r", 64, "chat_policy", (100,)), ["Why?"], 16, False, 1)


def test_empty_questions_rejected(smollm2_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        build_regime_prompts(smollm2_tokenizer, Regime("r", 128, "chat_policy", (100,)), [], 128, True, 1)


def test_jsonl_round_trip_and_errors(tmp_path):
    recs = [{"prompt": "p", "prefix_len_tokens": 3, "reuse_pct": 100, "request_index": 0}]
    write_jsonl(recs, tmp_path / "a.jsonl")
    assert read_prompts(tmp_path / "a.jsonl") == recs
    (tmp_path / "b.jsonl").write_text('{"prompt": "p"}\n')
    with pytest.raises(ValueError, match="b.jsonl:1: field 'prefix_len_tokens'"):
        read_prompts(tmp_path / "b.jsonl")
    (tmp_path / "c.jsonl").write_text("{nope\n")
    with pytest.raises(ValueError, match="c.jsonl:1: not valid JSON"):
        read_prompts(tmp_path / "c.jsonl")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(max_size=40), st.builds(json.dumps, st.dictionaries(st.text(max_size=5), st.integers()))), max_size=5
    )
)
def test_reader_fuzz_never_tracebacks(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "p.jsonl"
    path.write_text("\n".join(lines))
    try:
        read_prompts(path)
    except ValueError:
        pass


def test_question_variants_are_distinct_beyond_the_templates():
    from prefixbench.corpus import question_variants

    qs = question_variants(512)  # 8 rounds at concurrency 64
    assert len(qs) == 512 == len(set(qs)) and all(q.strip() for q in qs)
