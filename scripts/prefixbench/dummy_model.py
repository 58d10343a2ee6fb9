"""A random-weight model folder for `--load-format dummy`: a config.json of a known architecture + a shipped tokenizer.

vLLM then allocates and runs the real architecture with random weights: realistic compute and memory
traffic without downloading weights (the outputs are noise, and every report says so).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

# Phi-3-mini-4k-instruct's dimensions (3.8 B parameters); the vocabulary is the shipped tokenizer's,
# and sliding_window is off so every layer can use the prefix cache.
SHAPES: dict[str, dict] = {
    "phi3-mini": {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "original_max_position_embeddings": 4096,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "bfloat16",
    },
}


def make_dummy_model(shape: str, tokenizer_dir: Path, out_dir: Path) -> None:
    """Write config.json for `shape` and the tokenizer files (tokenizer.json is shipped gzipped)."""
    tok_files = [p for p in Path(tokenizer_dir).iterdir() if p.is_file() and p.name != "README.md"]
    packed = Path(tokenizer_dir) / "tokenizer.json.gz"
    if not packed.exists():
        raise FileNotFoundError(f"{packed} missing")
    tok = json.loads(gzip.decompress(packed.read_bytes()))
    ids = list(tok["model"]["vocab"].values()) + [t["id"] for t in tok.get("added_tokens", [])]
    vocab_size = max(ids) + 1
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(SHAPES[shape], vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    for p in tok_files:
        if p != packed:
            shutil.copy(p, out_dir / p.name)
    (out_dir / "SOURCE.json").write_text(
        json.dumps({"weights": "random (--load-format dummy)", "shape": shape, "tokenizer": str(tokenizer_dir)})
    )
