"""Tokenizer-exact repeated-prefix prompts.

Every prompt is ``<PREFIX>\\nQ: <question>\\nA:``. The shared prefix is exactly N tokens of the served
model's tokenizer and the *same token ids* open every prompt that shares it: this is checked by
re-tokenizing each full prompt, because BPE merges across the join would silently shorten the
cacheable prefix. Requests that do not reuse the shared prefix get a unique prefix of the same
length whose first tokens differ, so they cannot hit any cached block.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .corpus import text_of_at_least
from .kvcache import block_hashes

MAX_ATTEMPTS = 64


class Tokenizer(Protocol):
    """The two calls prompt generation needs (a Hugging Face tokenizer fits)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


class PrefixMismatch(ValueError):
    """A full prompt does not start with the shared prefix's token ids."""


@dataclass(frozen=True)
class Regime:
    """One prefix regime: how long the prefix is, what text it holds, which reuse levels to test."""

    name: str
    prefix_tokens: int
    workload: str
    reuse_pcts: tuple[int, ...]


def special_prefix_ids(tok: Tokenizer) -> list[int]:
    """Token ids the tokenizer puts in front of any text (e.g. BOS); the server adds them too."""
    with_special = tok.encode("x", add_special_tokens=True)
    plain = tok.encode("x", add_special_tokens=False)
    return with_special[: len(with_special) - len(plain)]


def aligned_length(prefix_tokens: int, block_size: int, align: bool) -> int:
    """Round a prefix length down to whole KV-cache blocks when asked (never below one block)."""
    if not align:
        return prefix_tokens
    return max(block_size, (prefix_tokens // block_size) * block_size)


def expected_cached_tokens(prefix_len: int, prompt_len: int, block_size: int) -> int:
    """Tokens a warm request can take from cache: whole blocks of the prefix, last prompt token excluded."""
    return (min(prefix_len, prompt_len - 1) // block_size) * block_size


def format_prompt(prefix: str, question: str) -> str:
    return f"{prefix}\nQ: {question}\nA:"


def encode_many(tok: Tokenizer, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
    """Many texts at once: the tokenizer's batch call where it has one, else one by one."""
    batch = getattr(tok, "encode_many", None)
    if batch is not None:
        return batch(texts, add_special_tokens)
    return [tok.encode(t, add_special_tokens=add_special_tokens) for t in texts]


def survives_every_question(tok: Tokenizer, prefix: str, want: list[int], questions: Sequence[str]) -> bool:
    """Whether `prefix` tokenizes to `want` at the start of the prompt of every question (no merge at the join)."""
    prompts = [format_prompt(prefix, q) for q in questions]
    return all(ids[: len(want)] == want for ids in encode_many(tok, prompts, add_special_tokens=True))


def exact_prefix(tok: Tokenizer, workload: str, seed: str, n_tokens: int, questions: Sequence[str]) -> tuple[str, list[int]]:
    """Text whose tokenization is exactly `n_tokens` ids (specials included) and stays so in every prompt."""
    special = special_prefix_ids(tok)
    n_content = n_tokens - len(special)
    if n_content < 1:
        raise ValueError(f"prefix of {n_tokens} tokens leaves no room after {len(special)} special tokens")
    for attempt in range(MAX_ATTEMPTS):
        text = text_of_at_least(workload, f"{seed}:{attempt}", min_chars=n_content * 8)
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) < n_content:
            continue
        cut = ids[:n_content]
        candidate = tok.decode(cut)
        if candidate != candidate.rstrip() or tok.encode(candidate, add_special_tokens=False) != cut:
            continue
        want = special + cut
        if survives_every_question(tok, candidate, want, questions):
            return candidate, want
    raise PrefixMismatch(f"could not build a {n_tokens}-token {workload} prefix that survives re-tokenization")


def build_regime_prompts(
    tok: Tokenizer, regime: Regime, questions: Sequence[str], block_size: int, align_to_block: bool, seed: int
) -> list[dict]:
    """All prompt records of one regime, one set per reuse level, each re-tokenized and checked."""
    if not questions:
        raise ValueError("the question list is empty")
    n_tokens = aligned_length(regime.prefix_tokens, block_size, align_to_block)
    shared_text, shared_ids = exact_prefix(tok, regime.workload, f"{seed}:{regime.name}:shared", n_tokens, questions)
    records: list[dict] = []
    for reuse in regime.reuse_pcts:
        rng = random.Random(f"{seed}:{regime.name}:{reuse}")
        n_shared = round(len(questions) * reuse / 100)
        shared_idx = set(rng.sample(range(len(questions)), n_shared))
        seen_shared = False
        for i, question in enumerate(questions):
            if i in shared_idx:
                prefix, prefix_ids, group = shared_text, shared_ids, "shared"
            else:
                prefix, prefix_ids = exact_prefix(
                    tok, regime.workload, f"{seed}:{regime.name}:{reuse}:unique{i}", n_tokens, [question]
                )
                group = f"unique-{i:03d}"
            prompt = format_prompt(prefix, question)
            ids = tok.encode(prompt, add_special_tokens=True)
            if ids[:n_tokens] != prefix_ids:
                raise PrefixMismatch(
                    f"regime {regime.name!r}, reuse {reuse}%, question {i} ({question!r}): the prompt's first "
                    f"{n_tokens} tokens differ from its prefix's (BPE merge at the join?)"
                )
            warm = group == "shared" and seen_shared
            seen_shared = seen_shared or group == "shared"
            records.append(
                {
                    "prompt": prompt,
                    "prefix_len_tokens": n_tokens,
                    "workload": regime.workload,
                    "regime": regime.name,
                    "reuse_pct": reuse,
                    "request_index": i,
                    "question": question,
                    "prefix_group": group,
                    "prompt_len_tokens": len(ids),
                    "expected_cached_tokens": expected_cached_tokens(n_tokens, len(ids), block_size) if warm else 0,
                    # Its full KV blocks, as vLLM hashes them: behind a router each replica's cache is replayed.
                    "block_hashes": block_hashes(ids, block_size),
                }
            )
    return records


def write_jsonl(records: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")


REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "prompt": (str, list),
    "prefix_len_tokens": int,
    "reuse_pct": int,
    "request_index": int,
}


def read_prompts(path: Path) -> list[dict]:
    """Read a prompts JSONL file, with a clear error naming the line for anything malformed."""
    out: list[dict] = []
    with Path(path).open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            for key, typ in REQUIRED_FIELDS.items():
                if not isinstance(rec.get(key), typ) or isinstance(rec.get(key), bool):
                    names = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
                    raise ValueError(f"{path}:{n}: field {key!r} missing or not {names}")
            out.append(rec)
    if not out:
        raise ValueError(f"{path}: no prompts")
    return out
