"""Snakemake edge: prefix_caching_results.html, the markdown report as one self-contained page (see
prefixbench.html_report)."""

import sys
from pathlib import Path

from prefixbench.html_report import page_title, render_html

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
markdown = Path(snakemake.input.markdown).read_text()
page = render_html(markdown, Path(snakemake.params.charts_dir), title=page_title(markdown))
Path(snakemake.output[0]).write_text(page)
