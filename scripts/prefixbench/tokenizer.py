"""The served model's tokenizer, as prompt generation needs it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class HFTokenizer:
    """A Hugging Face tokenizer whose decode never rewrites spaces (so ids round-trip)."""

    inner: Any

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.inner(text, add_special_tokens=add_special_tokens)["input_ids"])

    def encode_many(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        """One batch call: the Rust tokenizer encodes the texts in parallel (checking a prefix in front of 512
        questions one text at a time took most of a shape's prompt building)."""
        return [list(ids) for ids in self.inner(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self.inner.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def load_tokenizer(name_or_path: str) -> HFTokenizer:
    """Load from a local folder (offline) or a hub id, whichever the config names."""
    import logging
    import os

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    local = os.path.isdir(name_or_path)
    return HFTokenizer(AutoTokenizer.from_pretrained(name_or_path, local_files_only=local))
