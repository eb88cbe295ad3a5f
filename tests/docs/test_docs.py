"""The documentation: README and docs/ pages speak to users, link to pages that exist, and every
switch the generated command-line reference shows has help text.

The site itself is built strictly by ``make docs`` (CI), which also fails on broken links and
docstring errors; these tests catch what a build cannot see.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _cli_reference():
    path = DOCS / "_tooling" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("bpm_docs_cli_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


CLI = _cli_reference()
COMMANDS = CLI.all_parsers()


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


# Wording that tells how the project was developed, or points at files only its developers have.
INTERNAL = [
    (re.compile(r"\bissue\s*#?\d*\b", re.I), "an issue reference"),
    (re.compile(r"(?<![\w/])#\d+\b"), "a ticket number"),
    (re.compile(r"\.\./shared|/work/|\bshared/(data|weights)\b"), "a path on the developers' machines"),
    (re.compile(r"\b(this|our|these) (project's )?machines?\b", re.I), "the developers' machines"),
    (re.compile(r"\bbefore this change\b|\bthis work\b|\blent\b", re.I), "development history"),
]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_has_no_development_internal_wording(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = [f"{why}: {m.group(0)!r}" for rx, why in INTERNAL for m in rx.finditer(text)]
    assert not found, f"{page.relative_to(ROOT)}: {found}"


def test_generated_cli_reference_has_no_development_internal_wording() -> None:
    text = CLI.render()
    found = [f"{why}: {m.group(0)!r}" for rx, why in INTERNAL for m in rx.finditer(text)]
    assert not found, found


def test_the_internal_wording_check_catches_what_it_should() -> None:
    bad = ["as in issue #21", "the issue's figures", "(#18 item 5)", "../shared/data/x", "on this project's machine",
           "no GPU was lent"]
    for text in bad:
        assert any(rx.search(text) for rx, _ in INTERNAL), text
    assert not any(rx.search("see `--resize_h_w '(256, 128)'` and [Train](guide/train.md#recipes)") for rx, _ in INTERNAL)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#|<", t)]


def test_readme_links_into_docs_point_to_existing_pages() -> None:
    links = [t for t in _relative_links(README) if t.startswith("docs/")]
    assert links, "the README links into docs/"
    missing = [t for t in links if not (ROOT / t.split("#")[0]).is_file()]
    assert not missing, missing


def test_every_relative_link_of_the_readme_exists() -> None:
    missing = [t for t in _relative_links(README) if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, missing


def test_readme_stays_short_and_its_quick_start_is_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    quick = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in quick.strip().splitlines()]
    assert commands == ["./trainMe.sh", "make test"]


def test_every_switch_of_every_command_has_help_text() -> None:
    titles = {c.title for c in COMMANDS}
    from bpm.cli import SUBCOMMANDS

    assert {f"bpm {name}" for name in SUBCOMMANDS} <= titles
    assert "script/experiment/extract_weights.py" in titles and "script/dataset/transform_cuhk03.py" in titles
    missing = [f"{c.title} {a.option_strings[0] if a.option_strings else a.dest}"
               for c in COMMANDS for a in CLI.switches(c.parser) if not (a.help or "").strip()]
    assert not missing, missing


def test_defaults_are_shown_as_typed_not_as_python_values() -> None:
    shown = {(c.title, a.dest): CLI.help_text(c.parser, a) for c in COMMANDS for a in CLI.switches(c.parser)}
    assert all("e+" not in text and "10000000000" not in text and "('" not in text for text in shown.values()), \
        [k for k, t in shown.items() if "e+" in t or "10000000000" in t or "('" in t]
    assert "never" in shown[("bpm train", "epochs_per_val")]
    assert "(default: pt,pt16," in shown[("bpm export", "formats")]


def test_cli_reference_lists_every_switch_with_the_help_minus_h_prints() -> None:
    page = CLI.render()
    for command in COMMANDS:
        assert f"`{command.title}`" in page
    train = CLI.bpm_parser("train")
    for action in CLI.switches(train):
        assert f"`{action.option_strings[-1]}`" in page
    text = train.format_help()
    assert "(default: 0.3)" in CLI.help_text(train, next(a for a in train._actions if a.dest == "margin"))
    assert "(default: 0.3)" in " ".join(text.split())

