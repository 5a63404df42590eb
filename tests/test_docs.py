"""The documentation stays in step with the repository.

README.md and docs/*.md: every relative link leads to an existing file (and, for ``file.md#anchor``,
to an existing heading of that file), every ``options/``, ``scripts/``, ``tests/`` and ``docs/`` path
they name exists, the model card's markers are in place, and README.md stays short.
"""
from __future__ import annotations

import glob
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCS = sorted([REPO / 'README.md', *(REPO / 'docs').glob('*.md')])
README_MAX_LINES = 200

FENCE = re.compile(r'^\s*(```|~~~)')
INLINE_CODE = re.compile(r'`[^`\n]*`')
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')
PATH = re.compile(r'(?<![\w./-])((?:options|scripts|tests|docs)/[\w./{},*-]*)')
BRACES = re.compile(r'\{([^{}]*)\}')


def ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(REPO)) for path in paths]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: link markup dropped, lowercase, punctuation except - and _ removed,
    spaces to '-'."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)
    text = re.sub(r'<[^>]+>', '', text).strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding='utf-8')):
        match = HEADING.match(line)
        if not match:
            continue
        base = anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f'{base}-{count}')
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image outside code."""
    found = []
    for number, line in prose_lines(path.read_text(encoding='utf-8')):
        for match in LINK.finditer(INLINE_CODE.sub('code', line)):
            found.append((number, match.group(1)))
    return found


def expand_braces(pattern: str) -> list[str]:
    """Shell brace expansion of ``a_{x,y}_b`` (nested groups not needed)."""
    match = BRACES.search(pattern)
    if not match:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [expanded for option in match.group(1).split(',') for expanded in expand_braces(head + option + tail)]


def exists(relative: str) -> bool:
    if any(char in relative for char in '*?['):
        return bool(glob.glob(str(REPO / relative)))
    return (REPO / relative).exists()


def test_there_are_docs_to_check():
    names = ids(DOCS)
    assert 'README.md' in names and 'docs/README.md' in names and len(names) > 5


def test_readme_is_short():
    lines = (REPO / 'README.md').read_text(encoding='utf-8').count('\n')
    assert lines <= README_MAX_LINES, f'README.md has {lines} lines (at most {README_MAX_LINES}): move text to docs/'


@pytest.mark.parametrize('doc', DOCS, ids=ids(DOCS))
def test_relative_links_lead_somewhere(doc: Path):
    broken = []
    for number, target in links(doc):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition('#')
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f'{doc.name}:{number}: {target} (no file {file_part})')
        elif fragment and linked.suffix == '.md' and fragment not in anchors(linked):
            broken.append(f'{doc.name}:{number}: {target} (no heading #{fragment} in {linked.name})')
    assert not broken, 'broken links:\n' + '\n'.join(broken)


@pytest.mark.parametrize('doc', DOCS, ids=ids(DOCS))
def test_named_paths_exist(doc: Path):
    missing = []
    for number, line in enumerate(doc.read_text(encoding='utf-8').splitlines(), 1):
        for match in PATH.finditer(line):
            named = match.group(1).rstrip('.,')
            for relative in expand_braces(named):
                if not exists(relative):
                    missing.append(f'{doc.name}:{number}: {relative}')
    assert not missing, 'paths named in the docs that do not exist:\n' + '\n'.join(missing)


def test_model_card_block_is_marked_once():
    text = (REPO / 'docs' / 'networks.md').read_text(encoding='utf-8')
    start, end = '<!-- model-card:start -->', '<!-- model-card:end -->'
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)


@pytest.mark.parametrize('heading, expected', [
    ('`ibsd-infer`', 'ibsd-infer'),
    ("CDC's HGSR-MHR and CDC's loss", 'cdcs-hgsr-mhr-and-cdcs-loss'),
    ('Strict options, start-up checks', 'strict-options-start-up-checks'),
    ('CPU study: IMDN x2 (measured 2026-11-29)', 'cpu-study-imdn-x2-measured-2026-11-29'),
    ('What `import ibsd` fixes in basicsr 1.4.2', 'what-import-ibsd-fixes-in-basicsr-142'),
    ('snake_case [link](x.md)', 'snake_case-link'),
])
def test_anchor_rule(heading, expected):
    assert anchor(heading) == expected


def test_checks_catch_breakage(tmp_path):
    doc = tmp_path / 'page.md'
    doc.write_text('# Page\n\n## Two words\n\n[ok](#two-words) [bad](#three-words) [gone](nowhere.md)\n'
                   '```\n[in code](nowhere.md)\n# not a heading\n```\n', encoding='utf-8')
    assert anchors(doc) == {'page', 'two-words'}
    assert [target for _, target in links(doc)] == ['#two-words', '#three-words', 'nowhere.md']
    assert expand_braces('a_{x,y}_b_{1,2}.yml') == ['a_x_b_1.yml', 'a_x_b_2.yml', 'a_y_b_1.yml', 'a_y_b_2.yml']
    assert [m.group(1) for m in PATH.finditer('`options/a.yml`, studies/n/options/b.yml ./options/c.yml')] == \
        ['options/a.yml']


PLACEHOLDER = re.compile(r'<[A-Z][A-Z_]{2,}>|\bTODO\b|\bTBD\b')


@pytest.mark.parametrize('doc', DOCS, ids=ids(DOCS))
def test_no_placeholder_is_left_in_the_prose(doc: Path):
    left = [(number, match.group()) for number, line in prose_lines(doc.read_text())
            for match in PLACEHOLDER.finditer(INLINE_CODE.sub('', line))]
    assert not left, f'{doc.relative_to(REPO)}: placeholders left at lines {left}'
