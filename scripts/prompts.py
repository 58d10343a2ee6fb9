"""Snakemake edge: prompts for one regime (see prefixbench.prompts)."""

import sys
from pathlib import Path

from prefixbench.prompts import Regime, build_regime_prompts, write_jsonl
from prefixbench.tokenizer import load_tokenizer

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
p = snakemake.params
regime = Regime(**{**p.regime, "reuse_pcts": tuple(p.regime["reuse_pcts"])})
records = build_regime_prompts(load_tokenizer(p.tokenizer), regime, p.questions, p.block_size, p.align_to_block, p.seed)
write_jsonl(records, Path(snakemake.output[0]))
print(f"{regime.name}: {len(records)} prompts, prefix {records[0]['prefix_len_tokens']} tokens", file=sys.stderr)
