"""Every relative link in the user-facing markdown resolves: the file (or folder) exists,
and an #anchor names a heading of the target file as GitHub slugs it, or an explicit
<a id=...>/<a name=...>. The README and the guide in docs/ link into each other and into
benchmarks/RESULTS.md; a section renamed or moved would otherwise leave dead links behind
without anyone noticing. Plain text only: no torch, no build."""

import pathlib
import re

import pytest

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parents[2]


def checked_files():
    """The README, the guide and design notes in docs/, and the pages they link to most."""
    files = [ROOT / "README.md", ROOT / "examples" / "README.md", ROOT / "benchmarks" / "README.md",
             ROOT / "benchmarks" / "RESULTS.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.exists()]


FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")  # an ATX heading; closing #s need a space
EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:id|name)\s*=\s*[\"']?([^\"'\s>]+)", re.IGNORECASE)
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target). The text may hold one level of brackets; the target
# may hold balanced parentheses and ends at whitespace (a title follows) or the closing ')'.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s>]*(?:\([^()\s]*\)[^()\s>]*)*)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")


def prose_lines(text):
    """(line number, line) outside fenced code blocks, with inline code blanked out."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)


def slug(heading):
    """GitHub's anchor for a heading: the rendered text, lowercased, every character
    that is not a letter, digit, space, hyphen or underscore dropped, spaces to hyphens
    (runs of hyphens are kept, not collapsed)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


_anchors = {}


def anchors(path):
    """Every anchor a link may name in `path`: heading slugs, with -1, -2, ... for
    repeated ones as GitHub numbers them, and explicit <a id/name> anchors."""
    if path not in _anchors:
        found, seen = set(), {}
        text = path.read_text(encoding="utf-8")
        fenced = False
        for line in text.splitlines():
            if FENCE.match(line):
                fenced = not fenced
                continue
            if fenced:
                continue
            found.update(m.lower() for m in EXPLICIT_ANCHOR.findall(line))
            heading = HEADING.match(line)
            if heading:
                base = slug(heading.group(2))
                count = seen.get(base, 0)
                seen[base] = count + 1
                found.add(base if count == 0 else f"{base}-{count}")
        _anchors[path] = found
    return _anchors[path]


def links(path):
    """(line number, target) of every link in `path`'s prose."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in INLINE_LINK.finditer(line):
            yield number, match.group(1)
        definition = REFERENCE_DEFINITION.match(line)
        if definition:
            yield number, definition.group(1)


def broken_links(path, root=ROOT):
    """A message for every relative link in `path` that does not resolve."""
    problems = []
    for number, target in links(path):
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http(s), mailto: not checked here
        file_part, _, anchor = target.partition("#")
        where = f"{path.relative_to(root)}:{number}: {target}"
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and resolved.suffix == ".md" and anchor.lower() not in anchors(resolved):
            problems.append(f"{where}: no heading or anchor '{anchor}' in {resolved.name}")
    return problems


@pytest.mark.parametrize("path", checked_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


def test_the_slug_rules_are_githubs():
    assert slug("Compressed FSDP2 and ZeRO: reduce-scatter and all-gather") == (
        "compressed-fsdp2-and-zero-reduce-scatter-and-all-gather")
    assert slug("Collective benchmark: `python -m qccl.bench`") == "collective-benchmark-python--m-qcclbench"
    assert slug("Restarts: keys of each creation's own") == "restarts-keys-of-each-creations-own"
    assert slug("allreduce on 1 Gbit/s links") == "allreduce-on-1-gbits-links"
    assert slug("Error-feedback state (`algo/residual_store.h`)") == "error-feedback-state-algoresidual_storeh"
    assert HEADING.match("## C# bindings ##").group(2) == "C# bindings"


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# Title\n\n## Same\n\n## Same\n\n<a id=\"kept\"></a>\n"
        "[ok](#same-1) [ok](#kept) [ok](b.md#b-side) [ok](https://example.com/x#y)\n"
        "`[not a link](nowhere.md)`\n\n```\n[not a link](nowhere.md)\n# not a heading\n```\n"
        "[gone](missing.md) [bad anchor](b.md#not-there) [bad local](#same-2) [bad](#not-a-heading)\n")
    (tmp_path / "docs" / "b.md").write_text("# B side\n")
    problems = broken_links(tmp_path / "docs" / "a.md", root=tmp_path)
    assert len(problems) == 4, problems
    assert "missing.md" in problems[0] and "not-there" in problems[1]
    assert "same-2" in problems[2] and "not-a-heading" in problems[3]
