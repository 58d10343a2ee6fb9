"""Snakemake edge: prompts for one workload shape (see prefixbench.shapes)."""

import sys
from pathlib import Path

from prefixbench.prompts import write_jsonl
from prefixbench.shapes import Shape, build_shape_prompts
from prefixbench.tokenizer import load_tokenizer

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
p = snakemake.params
tok = load_tokenizer(p.tokenizer)
records = build_shape_prompts(
    tok,
    Shape(**p.shape),
    p.questions,
    p.block_size,
    p.seed,
    max_model_len=p.max_model_len,
    max_tokens=p.max_tokens,
    vocab_size=len(tok.inner),
)
write_jsonl(records, Path(snakemake.output[0]))
print(f"{p.shape['name']}: {len(records)} prompts ({p.shape['kind']})", file=sys.stderr)
