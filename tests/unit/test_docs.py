"""The documentation explains the repository from inside it, and stays true to the code.

Every Markdown file is read: no link may leave the repository, no sentence may speak of how the code was
written (issues, work sessions) or of the disk spool the journal replaced; every relative link resolves; the
contracts page names every variable and metric the bridge has.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.app.health import BridgeCollector
from bridge.app.registry import build_normalizers
from bridge.app.settings import Settings, known_variables
from bridge.app.stats import PipelineStats

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {"node_modules", "build", "dist", "venv", "site-packages"}


def markdown_files() -> list[Path]:
    found = []
    for path in sorted(ROOT.rglob("*.md")):
        parts = path.relative_to(ROOT).parts[:-1]
        if any(part.startswith(".") or part in SKIPPED_DIRS or part.endswith(".egg-info") for part in parts):
            continue
        found.append(path)
    return found


MARKDOWN = markdown_files()
IDS = [str(path.relative_to(ROOT)) for path in MARKDOWN]

# "session" is also a word of the trade: Supabase's session pooler and `session` pool mode, a vendor's
# stream session and session id, a client library's Session class. Those uses are allowed; any other is not.
ALLOWED_SESSION = re.compile(
    r"session[- ]pooler|`session`|session (id|endpoint|helper|per connection)|stream session|/session\b"
    r"|session\.py|Session\.\w+",
    re.IGNORECASE,
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_documentation_is_found() -> None:
    names = {str(path.relative_to(ROOT)) for path in MARKDOWN}
    assert {"README.md", "docs/architecture.md", "docs/contracts.md", "docs/decisions.md"} <= names


@pytest.mark.parametrize("path", MARKDOWN, ids=IDS)
def test_nothing_links_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    assert "../" not in text
    assert "/work/" not in text
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        assert (path.parent / target.split("#")[0]).resolve().is_relative_to(ROOT), target


@pytest.mark.parametrize("path", MARKDOWN, ids=IDS)
def test_every_relative_link_resolves(path: Path) -> None:
    for target in LINK.findall(path.read_text()):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        assert (path.parent / target.split("#")[0]).exists(), f"{path.name}: {target}"


@pytest.mark.parametrize("path", MARKDOWN, ids=IDS)
def test_no_word_about_how_it_was_built_or_the_spool(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"issue\s*#", text, re.IGNORECASE)
    assert not re.search(r"spool", text, re.IGNORECASE)
    remaining = ALLOWED_SESSION.sub("", text)
    lines = [line for line in remaining.splitlines() if re.search(r"session", line, re.IGNORECASE)]
    assert lines == []


def test_the_readme_links_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in ("architecture", "contracts", "journal", "decisions", "operations"):
        assert f"](docs/{page}.md)" in readme, page


CONTRACTS = (ROOT / "docs" / "contracts.md").read_text()


def test_the_contracts_name_every_environment_variable() -> None:
    missing = [name for name in known_variables() if f"`{name}`" not in CONTRACTS]
    assert missing == []


def test_the_contracts_name_every_metric() -> None:
    collector = BridgeCollector(PipelineStats(), build_normalizers(Settings()), monotonic=lambda: 0.0)
    names = [family.name + ("_total" if family.type == "counter" else "") for family in collector.collect()]
    assert len(names) > 20
    missing = [name for name in names if not re.search(rf"`{name}[{{`]", CONTRACTS)]
    assert missing == []


def test_the_contracts_name_every_verb() -> None:
    from bridge.app.cli import main

    missing = [verb for verb in main.commands if f"`bridge {verb}" not in CONTRACTS]
    assert missing == []
