"""The README a newcomer finishes (issue 22): at most 150 lines, its test command the one CI runs, its terms defined
before they are used, and no link in it or in docs/ to a file a clone does not have (the old README pointed at
"ENGINES.md" and "../shared/..." in a workspace no user has)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:
FENCE = re.compile(r"^(```|~~~)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and HTML comments: a `[x](y)` in a code sample is not a link."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return "\n".join(kept)


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", prose(path.read_text()), re.MULTILINE)}


def ignored(path: Path, root: Path) -> bool:
    """Whether git ignores the path (a run's output, an environment): a clone does not have it."""
    if shutil.which("git") is None or not (root / ".git").exists():
        return False
    rel = path.resolve().relative_to(root)
    return subprocess.run(["git", "check-ignore", "-q", str(rel)], cwd=root).returncode == 0


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of `path` whose file is missing, ignored, outside the repository, or lacks its #anchor."""
    broken = []
    for target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not dest.is_relative_to(root):
            broken.append(f"{target}: outside the repository")
        elif not dest.exists():
            broken.append(f"{target}: no such file")
        elif ignored(dest, root):
            broken.append(f"{target}: ignored by git, so a clone does not have it")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return broken


def test_the_readme_is_at_most_150_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_of_the_repository(doc):
    assert broken_links(doc) == []


def test_every_doc_has_a_title():
    for doc in DOCS:
        first = doc.read_text().lstrip().splitlines()[0]
        assert first.startswith("# "), f"{doc.relative_to(ROOT)} starts with {first!r}, not a '# ' title"


def quickstart_commands() -> list[str]:
    """The commands of the README's Quickstart code block, comments stripped."""
    section = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.DOTALL)
    assert block, "the Quickstart has no code block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def ci_command() -> str:
    """The command .ci/run executes (its `exec` line)."""
    execs = [
        line.strip().removeprefix("exec ").strip()
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line.strip().startswith("exec ")
    ]
    assert len(execs) == 1, f".ci/run should exec one command, found {execs}"
    return execs[0]


def test_the_readme_test_command_is_the_one_ci_runs():
    commands = quickstart_commands()
    assert ci_command() in commands, f"CI runs {ci_command()!r}; the README's Quickstart gives {commands}"
    assert "./run.sh" in commands, "the Quickstart's main command is ./run.sh"


@pytest.mark.parametrize("term", ["Forced miss", "Paired", "MDE", "A/A floor", "0%-reuse control"])
def test_the_readme_defines_a_term_before_using_it(term):
    text = prose(README.read_text())
    first_use = text.lower().find(term.lower())
    definition = text.find(f"**{term}**")
    assert definition >= 0, f"README.md never defines **{term}**"
    assert first_use == definition + 2, f"README.md uses {term!r} before defining it: {text[first_use - 60 : first_use + 40]!r}"


def test_the_link_checker_finds_a_broken_link(tmp_path):
    """The checker itself can fail: a missing file, a missing anchor and a path outside the repository are caught."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/how.md").write_text("# How it measures\n\n## The cache model\n")
    doc = tmp_path / "docs/probe.md"
    doc.write_text(
        "# t\n[a](nope.md) [b](how.md#no-such-heading) [c](../../outside.md) [d](https://x.org) [e](how.md#the-cache-model)\n"
        "```\n[f](in-a-code-block.md)\n```\n<!-- [g](in-a-comment.md) -->\n"
    )
    found = broken_links(doc, root=tmp_path)
    assert [f.split(":")[0] for f in found] == ["nope.md", "how.md#no-such-heading", "../../outside.md"]
