"""prefixbench: what vLLM's automatic prefix caching buys on repeated-prefix traffic."""

MODES = ("no_prefix_cache", "with_prefix_cache")
OFF, ON = MODES
