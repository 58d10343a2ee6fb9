"""Snakemake edge: the endpoint standing for one cache setting, as JSON (see prefixbench.endpoint)."""

import json
import sys
from pathlib import Path

from prefixbench.endpoint import redact_url

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
ep = dict(snakemake.params.endpoint)
Path(snakemake.output[0]).write_text(
    json.dumps(
        {
            "mode": snakemake.wildcards.mode,
            "base_url": redact_url(ep["base_url"]),
            "model": ep["model"],
            "api_key_env": ep.get("api_key_env"),
            "salt_every_request": ep["salt_every_request"],
        },
        indent=2,
    )
    + "\n"
)
