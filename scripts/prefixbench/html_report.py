"""prefix_caching_results.html: the markdown report as one self-contained page, its charts interactive.

The markdown stays the document; this is the same text for a browser, made so it works from `file://` on a machine
with no network: the Vega, Vega-Lite and vega-embed libraries are inlined once (vl-convert bundles them, so nothing is
downloaded at build time either), each chart's Vega-Lite spec (`charts/NAME.vl.json`, data inline) is embedded
beside the place its PNG stood, and a chart without a spec, or any other image, becomes a `data:` URI. A Content
Security Policy in the page forbids every fetch, so a network reference added later fails loudly in the browser
(the headless-Chromium test reads the console) instead of silently needing a connection.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import vl_convert
from markdown_it import MarkdownIt
from markdown_it.token import Token

SPEC_SUFFIX = ".vl.json"
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
# Nothing leaves the page: scripts and styles are inline, images are data: URIs. Vega compiles its expressions with
# Function(), hence 'unsafe-eval'; vega-embed's export menu makes data:/blob: downloads.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
)
# vl-convert's bundle exposes what this snippet assigns (its default, spelled out: the stubs make it required).
BUNDLE_GLOBALS = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"
NETWORK = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
# A table cell that states a number (with its unit, interval or arrow): right-aligned. "n/a" and empty cells do not
# decide a column either way.
_NUMBER_START = re.compile(r"^[-−+±~≈<>≤≥(\[]?\d")
_NUMBER_REST = re.compile(r"\d|[\s.,:;%×±–—\-−+/()\[\]→~≈<>≤≥*_]|µs|ms|s\b|x\b|[KMG]i?B|tokens?|tok|req|n/a")
_NEUTRAL = {"", "n/a", "—", "-", "–"}

CSS = """
:root{--fg:#1d2125;--muted:#59636e;--rule:#d1d9e0;--alt:#f6f8fa;--accent:#0a5bb5}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;color:var(--fg);background:#fff;
 font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif}
.layout{display:grid;grid-template-columns:14rem minmax(0,58rem);gap:2.5rem;justify-content:center;padding:0 1.5rem}
nav.toc{position:sticky;top:0;align-self:start;max-height:100vh;overflow-y:auto;padding:1.6rem 0;font-size:.85rem}
nav.toc .toc-title{font-weight:600;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;font-size:.75rem}
nav.toc ol{list-style:none;margin:.5rem 0 0;padding:0}
nav.toc li{margin:.3rem 0;line-height:1.3}
nav.toc a{color:var(--fg);text-decoration:none}
nav.toc a:hover{color:var(--accent);text-decoration:underline}
main{min-width:0;padding:.5rem 0 4rem}
@media (max-width:64rem){.layout{grid-template-columns:minmax(0,1fr);gap:0}
 nav.toc{position:static;max-height:none;border-bottom:1px solid var(--rule);padding:.75rem 0}}
h1,h2,h3,h4{line-height:1.25;scroll-margin-top:1rem}
h1{font-size:1.8rem;margin:1.2rem 0 .8rem}
h2{font-size:1.35rem;margin:2.4rem 0 .8rem;padding-bottom:.25rem;border-bottom:1px solid var(--rule)}
h3{font-size:1.1rem;margin:1.8rem 0 .6rem}
a{color:var(--accent)}
a.anchor{margin-left:.4rem;color:var(--muted);text-decoration:none;font-weight:400;opacity:0}
h1:hover a.anchor,h2:hover a.anchor,h3:hover a.anchor,h4:hover a.anchor,a.anchor:focus{opacity:1}
p,ul,ol{margin:.6rem 0}
.table-wrap{overflow-x:auto;margin:.9rem 0}
table{border-collapse:collapse;font-size:.875rem}
th,td{border:1px solid var(--rule);padding:.3rem .6rem;vertical-align:top;text-align:left}
th{background:var(--alt);font-weight:600}
tbody tr:nth-child(even){background:#fafbfc}
thead.blank{display:none}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td:not(.num){min-width:7em}
code{font:.86em ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;background:var(--alt);
 padding:.1em .3em;border-radius:3px}
pre{background:var(--alt);padding:.75rem 1rem;overflow-x:auto;border-radius:4px;line-height:1.4}
pre code{background:none;padding:0;font-size:.82rem}
blockquote{margin:.9rem 0;padding:.1rem 1rem;border-left:4px solid var(--rule);color:var(--muted)}
figure.chart{margin:1.4rem 0;overflow-x:auto}
figure.chart img{max-width:100%;height:auto}
figcaption{color:var(--muted);font-size:.85rem;margin-top:.3rem}
.vega-view{min-height:2rem}
.vega-failed{color:#b00020}
@media print{nav.toc{display:none}.layout{display:block}a.anchor{display:none}}
"""

# Draws every embedded chart; a chart that fails says so on the page and in the console (where the test looks).
EMBED_JS = """
(function () {
  var options = {renderer: "svg", actions: {export: true, source: false, compiled: false, editor: false}};
  document.querySelectorAll(".vega-view").forEach(function (el) {
    var spec = JSON.parse(document.getElementById(el.dataset.spec).textContent);
    vegaEmbed(el, spec, options).then(function () {
      el.dataset.rendered = "true";
    }).catch(function (err) {
      el.dataset.rendered = "failed";
      el.classList.add("vega-failed");
      el.textContent = "This chart could not be drawn: " + err;
      console.error("chart " + el.dataset.spec + " failed:", err);
    });
  });
})();
"""


def render_html(markdown: str, charts_dir: Path, *, title: str) -> str:
    """The report page: `markdown` rendered (CommonMark plus tables), headings anchored, a contents list of the
    sections, each `![alt](charts/NAME.png)` standing alone drawn from `charts_dir/NAME.vl.json` through Vega-Lite
    when that spec exists, otherwise embedded as a PNG data: URI.

    Relative image paths are read relative to the markdown's folder, taken to be `charts_dir`'s parent (the report
    sits beside its charts/). A missing image or a network image raises rather than leaving a hole or a fetch.
    """
    md = _parser()
    env: dict[str, Any] = {"base": charts_dir.parent, "specs": {}}
    tokens = md.parse(markdown, env)
    headings = _anchor_headings(tokens)
    _align_numbers(tokens)
    tokens = _figures(tokens, env)
    body = md.renderer.render(tokens, md.options, env)
    specs: dict[str, Any] = env["specs"]
    scripts = ""
    if specs:
        data = "".join(
            f'<script type="application/json" id="{html.escape(sid)}">{_json_for_script(spec)}</script>\n'
            for sid, spec in specs.items()
        )
        bundle = _bundle(_vegalite_version(specs.values()))
        scripts = f"{data}<script>{bundle}</script>\n<script>{EMBED_JS}</script>\n"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<div class="layout">\n{_contents(headings)}<main>\n{body}</main>\n</div>\n{scripts}</body>\n</html>\n'
    )


def page_title(markdown: str, default: str = "prefixbench report") -> str:
    """The page's title: the markdown's first level-1 heading, as plain text."""
    tokens = _parser().parse(markdown)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h1":
            return _plain_text(tokens[i + 1])
    return default


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark").enable("table")
    md.add_render_rule("heading_close", _render_heading_close)
    md.add_render_rule("table_open", _render_table_open)
    md.add_render_rule("table_close", _render_table_close)
    md.add_render_rule("image", _render_image)
    return md


def _anchor_headings(tokens: list[Token]) -> list[tuple[int, str, str]]:
    """Gives every heading a GitHub-style id (unique within the page); returns (level, id, text) for each."""
    seen: dict[str, int] = {}
    out = []
    for i, token in enumerate(tokens):
        if token.type != "heading_open":
            continue
        text = _plain_text(tokens[i + 1])
        base = _slug(text) or "section"
        n = seen.get(base, 0)
        seen[base] = n + 1
        anchor = base if n == 0 else f"{base}-{n}"
        token.attrSet("id", anchor)
        out.append((int(token.tag[1]), anchor, text))
    return out


def _slug(text: str) -> str:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _plain_text(inline: Token) -> str:
    return "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))


def _contents(headings: Sequence[tuple[int, str, str]]) -> str:
    """The sections (level 2) as a sticky list beside the text: a reader sees at once what is further down."""
    items = "".join(f'<li><a href="#{anchor}">{html.escape(text)}</a></li>' for level, anchor, text in headings if level == 2)
    if not items:
        return ""
    return f'<nav class="toc" aria-label="Contents"><div class="toc-title">Contents</div><ol>{items}</ol></nav>\n'


def _rows(tokens: list[Token], start: int) -> Iterator[list[tuple[Token, str]]]:
    """The rows of the table opening at `start`: each cell's opening token (th/td) and its text."""
    row: list[tuple[Token, str]] = []
    for i in range(start + 1, len(tokens)):
        token = tokens[i]
        if token.type == "table_close":
            return
        if token.type in ("th_open", "td_open"):
            row.append((token, _plain_text(tokens[i + 1]).strip()))
        elif token.type == "tr_close":
            yield row
            row = []


def _align_numbers(tokens: list[Token]) -> None:
    """Marks table columns whose every stated cell is a number (`num`: right-aligned, tabular digits), and hides a
    header row with nothing in it."""
    for i, token in enumerate(tokens):
        if token.type != "table_open":
            continue
        cells = list(_rows(tokens, i))
        if cells and all(text == "" for _, text in cells[0]):  # a key/value table's blank header row: not shown
            tokens[i + 1].attrJoin("class", "blank")
        body = cells[1:]
        for col in range(max((len(r) for r in cells), default=0)):
            texts = [r[col][1] for r in body if col < len(r) and r[col][1] not in _NEUTRAL]
            if texts and all(_is_number(t) for t in texts):
                for row in cells:
                    if col < len(row) and not row[col][0].attrGet("style"):
                        row[col][0].attrJoin("class", "num")


def _is_number(text: str) -> bool:
    return bool(_NUMBER_START.match(text)) and len(text) <= 40 and not _NUMBER_REST.sub("", text)


def _figures(tokens: list[Token], env: dict[str, Any]) -> list[Token]:
    """Replaces each paragraph holding just one image by a figure: a Vega-Lite view, or the image embedded."""
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        image = _lone_image(tokens, i)
        if image is None:
            out.append(tokens[i])
            i += 1
            continue
        figure = Token("html_block", "", 0)
        figure.content = _figure(image, env)
        out.append(figure)
        i += 3
    return out


def _lone_image(tokens: list[Token], i: int) -> Token | None:
    if tokens[i].type != "paragraph_open" or i + 2 >= len(tokens) or tokens[i + 2].type != "paragraph_close":
        return None
    parts = [c for c in tokens[i + 1].children or [] if not (c.type == "text" and not c.content.strip())]
    parts = [c for c in parts if c.type not in ("softbreak", "hardbreak")]
    return parts[0] if len(parts) == 1 and parts[0].type == "image" else None


def _figure(image: Token, env: dict[str, Any]) -> str:
    src = str(image.attrGet("src") or "")
    alt = html.escape(_alt(image))
    path = _local_image(src, env["base"])
    name = path.name.split(".")[0]
    spec_path = path.with_name(name + SPEC_SUFFIX)
    if path.suffix == ".png" and spec_path.exists():
        spec = json.loads(spec_path.read_text())
        _check_inline_data(spec, spec_path)
        spec_id = f"vl-spec-{_slug(name)}"
        env["specs"][spec_id] = spec
        view = f'<div class="vega-view" data-spec="{spec_id}" role="figure" aria-label="{alt}"></div>'
    else:
        view = f'<img src="{_data_uri(path)}" alt="{alt}">'
    shown = env.setdefault("figures", {})
    shown[name] = shown.get(name, 0) + 1  # a chart shown twice keeps its spec once but needs a second id
    figure_id = f"chart-{_slug(name)}" + (f"-{shown[name] - 1}" if shown[name] > 1 else "")
    return f'<figure class="chart" id="{figure_id}">{view}<figcaption>{alt}</figcaption></figure>\n'


def _alt(image: Token) -> str:
    return "".join(c.content for c in image.children or []) or image.content


def _render_image(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]) -> str:
    """An image inside running text: embedded as a data: URI."""
    image = tokens[idx]
    path = _local_image(str(image.attrGet("src") or ""), env["base"])
    return f'<img src="{_data_uri(path)}" alt="{html.escape(_alt(image))}">'


def _local_image(src: str, base: Path) -> Path:
    if NETWORK.match(src) or src.startswith("data:"):
        raise ValueError(f"the report's image {src!r} is not a file beside it: the page must need no network")
    path = base / src
    if not path.exists():
        raise FileNotFoundError(f"the report shows {src!r}, but {path} does not exist")
    return path


def _data_uri(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: not an image type the page can embed ({', '.join(IMAGE_TYPES)})")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _check_inline_data(spec: Any, where: Path) -> None:
    """A spec whose data is a URL would be fetched by the page: refuse it here, not in a reader's browser."""
    if isinstance(spec, dict):
        data = spec.get("data")
        if isinstance(data, dict) and "url" in data:
            raise ValueError(f"{where}: data from {data['url']!r}; the page needs the data inline")
        for value in spec.values():
            _check_inline_data(value, where)
    elif isinstance(spec, list):
        for value in spec:
            _check_inline_data(value, where)


def _vegalite_version(specs: Any) -> str | None:
    """The Vega-Lite version the specs were written for (Altair's $schema), where vl-convert bundles it."""
    versions = set()
    for spec in specs:
        match = re.search(r"/v(\d+\.\d+)(?:\.\d+)?\.json$", str(spec.get("$schema", "")))
        versions.add(match.group(1) if match else None)
    (version,) = versions if len(versions) == 1 else (None,)
    return version if version in vl_convert.get_vegalite_versions() else None


@functools.lru_cache(maxsize=2)
def _bundle(vl_version: str | None) -> str:
    """Vega, Vega-Lite and vega-embed as one inline script (built by vl-convert, seconds: kept per process)."""
    return _script_safe(vl_convert.javascript_bundle(BUNDLE_GLOBALS, vl_version=vl_version))


def _json_for_script(spec: Any) -> str:
    """JSON inside <script>: '<' escaped, so no '</script>' in a string can end the element."""
    return json.dumps(spec, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _script_safe(js: str) -> str:
    """'</script' can only sit in a JavaScript string, regex or comment, where '<\\/' means the same."""
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)


def _render_heading_close(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]) -> str:
    anchor = tokens[idx - 2].attrGet("id")
    link = f'<a class="anchor" href="#{anchor}" aria-label="link to this section">#</a>' if anchor else ""
    return f"{link}</{tokens[idx].tag}>\n"


def _render_table_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]) -> str:
    return '<div class="table-wrap"><table>\n'


def _render_table_close(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: dict[str, Any]) -> str:
    return "</table></div>\n"
