"""The README and docs/ say only what the repository has: every relative link and its anchor, every repository
path, every ``bezier-distill`` verb and flag, and every config key they name exist; docs/configuration.md is
what ``python -m cluster.config_docs`` prints; docs/architecture.md names every module of the four packages.

Paths a run writes (``runs/...``), placeholders in capitals (``docs/results/NAME/``) and web links are not
checked. ``problems`` is run on small made-up texts too, so each kind of mistake is shown to be caught.
"""

from __future__ import annotations

import argparse
import re
import shlex
from functools import lru_cache
from pathlib import Path

import pytest

from cluster.cli import build_parser
from cluster.config import RunConfig
from cluster.config_docs import config_keys, render

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("guide_store", "teachers", "student", "cluster")
PATH_ROOTS = (*(f"{p}/" for p in PACKAGES), "configs/", "docs/", "tests/", ".ci/")
TOP_FILES = ("README.md", "pyproject.toml")
SHELL_LANGS = ("", "bash", "sh", "shell", "console")
FILE_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".py", ".png", ".md", ".safetensors", ".txt", ".parquet")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str, list[str]]]]:
    """(prose lines as (line number, text), fenced blocks as (first line number, language, lines))."""
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if block is None and fence:
            block = (number + 1, fence.group(1), [])
        elif block is not None and line.strip().startswith("```"):
            blocks.append(block)
            block = None
        elif block is not None:
            block[2].append(line)
        else:
            prose.append((number, line))
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in split_markdown(text)[0]:
        m = re.match(r"^#{1,6}\s+(.*)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


@lru_cache(maxsize=1)
def parser() -> argparse.ArgumentParser:
    return build_parser()


@lru_cache(maxsize=1)
def run_keys() -> frozenset[str]:
    return frozenset(config_keys(RunConfig))


def sections() -> set[str]:
    """Top-level keys that hold sections (``student``, ``guides``, ...): the first part of a dotted key."""
    return {k.split(".")[0].removesuffix("[]") for k in run_keys() if "." in k}


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return None


def _options(p: argparse.ArgumentParser) -> set[str]:
    return {flag for action in p._actions for flag in action.option_strings}


def _is_placeholder(text: str) -> bool:
    return bool(re.search(r"(^|[/._-])[A-Z][A-Z0-9]*([/._-]|$)", text)) or "..." in text


def check_key(key: str) -> str | None:
    """A problem with a dotted config key (``student.steps``, ``teachers[].resources``), or None."""
    if _is_placeholder(key) or key in run_keys():
        return None
    return f"config key `{key}` is not in the schema (docs/configuration.md lists them)"


def check_command(text: str) -> list[str]:
    """Problems with one ``bezier-distill ...`` command line (synopsis brackets and ``a|b`` allowed)."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:
        tokens = text.split()
    out, p, path, expect_verb, i = [], parser(), ["bezier-distill"], True, 0
    while i < len(tokens):
        token = tokens[i].strip("[]()")
        i += 1
        if token in ("", "|", "...") or token == "\\":
            continue
        if token.startswith("-"):
            flag = token.split("=", 1)[0]
            if flag not in _options(p):
                out.append(f"`{' '.join(path)}` has no option {flag}")
            if flag == "--set":
                value = token.split("=", 1)[1] if "=" in token else (tokens[i] if i < len(tokens) else "")
                i += 0 if "=" in token else 1
                problem = check_key(value.strip("[]()").split("=", 1)[0])
                if problem and value:
                    out.append(problem)
            continue
        if expect_verb and _is_placeholder(token):  # `bezier-distill COMMAND --help`
            return out
        if expect_verb:
            choices = _subparsers(p)
            if choices is None:
                expect_verb = False
                continue
            verbs = token.split("/") if "/" in token and not token.startswith(PATH_ROOTS) else [token]
            unknown = [v for v in verbs if v not in choices]
            if unknown:
                out.append(f"`{' '.join(path)}` has no command {token!r} (it has: {', '.join(choices)})")
                return out
            p = choices[verbs[0]]
            path.append(token)
            expect_verb = _subparsers(p) is not None
    return out


def commands_in(text: str) -> list[str]:
    """The ``bezier-distill`` command lines in a line of shell or an inline code span."""
    return [
        m.group(1)
        for m in re.finditer(r"(?:^|[\s;&(])bezier-distill((?:\s+\S+)*)", text)
        if not re.match(r"^\S", m.group(1) or " ")
    ]


def path_tokens(text: str) -> list[str]:
    out = []
    for token in re.split(r"[\s,;()\[\]{}<>|\"'=`]+", text):
        token = token.rstrip(".:").split("::")[0]
        if token.startswith(PATH_ROOTS) or token in TOP_FILES:
            out.append(token)
    return out


def check_path(token: str) -> str | None:
    if _is_placeholder(token):
        return None
    if "*" in token:
        return None if list(ROOT.glob(token)) else f"no repository path matches `{token}`"
    return None if (ROOT / token).exists() else f"repository path `{token}` does not exist"


def check_link(target: str, source: Path, own_text: str, text_of) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not checked
        return None
    file_part, _, anchor = target.partition("#")
    if not file_part:
        return None if anchor in anchors(own_text) else f"link `{target}`: no heading here has that anchor"
    dest = (source.parent / file_part).resolve()
    if ROOT not in (dest, *dest.parents):
        return f"link `{target}` points outside the repository"
    if not dest.exists():
        return f"link `{target}` goes nowhere ({dest.relative_to(ROOT)} does not exist)"
    if anchor and dest.suffix == ".md" and anchor not in anchors(text_of(dest)):
        return f"link `{target}`: {dest.relative_to(ROOT)} has no heading with anchor #{anchor}"
    return None


def inline_key(span: str) -> str | None:
    """The config key an inline code span names (``student.steps``, ``guides.rule=trajectory``), or None
    for module names (``student.objectives``), file names and everything else."""
    m = re.match(r"^([a-z_]+(?:\[\])?(?:\.[a-z0-9_]+(?:\[\])?)+)(?=$|[=:\s])", span)
    if not m or m.group(1).endswith(FILE_SUFFIXES):
        return None
    key = m.group(1)
    parts = key.replace("[]", "").split(".")
    if parts[0] not in sections():
        return None
    if parts[0] in PACKAGES and (
        (ROOT / parts[0] / f"{parts[1]}.py").exists() or (ROOT / parts[0] / parts[1]).is_dir()
    ):
        return None  # a module: student.objectives, teachers.guides
    return key


def problems(text: str, source: Path, text_of=lambda p: p.read_text()) -> list[str]:
    """Everything in one markdown text that names what the repository does not have."""
    name = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    out = []
    prose, blocks = split_markdown(text)
    for number, line in prose:
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
            problem = check_link(target, source, text, text_of)
            out += [f"{name}:{number}: {problem}"] if problem else []
        for span in re.findall(r"`([^`\n]+)`", line):
            found = [check_path(t) for t in path_tokens(span)]
            found += [p for c in commands_in(span) for p in check_command(c)]
            key = inline_key(span)
            found.append(check_key(key) if key else None)
            out += [f"{name}:{number}: {p}" for p in found if p]
    for first, lang, lines in blocks:
        joined: list[tuple[int, str]] = []
        for k, line in enumerate(lines):  # shell lines continued with a backslash are one command
            if joined and joined[-1][1].endswith("\\"):
                joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
            else:
                joined.append((first + k, line))
        for number, line in joined:
            found = [check_path(t) for t in path_tokens(line.split(" #")[0] if lang in SHELL_LANGS else line)]
            if lang in SHELL_LANGS:
                found += [p for c in commands_in(line) for p in check_command(c)]
            out += [f"{name}:{number}: {p}" for p in found if p]
    return out


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_only_what_exists(doc):
    assert problems(doc.read_text(), doc) == []


def test_readme_is_short():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; at most 250 (move the rest into docs/)"
    long = [f"README.md:{n}: {len(line)} characters" for n, line in enumerate(lines, 1) if len(line) > 110]
    assert long == []


def test_nothing_points_outside_the_repository():
    texts = [
        *doc_files(),
        *sorted((ROOT / "configs").glob("*.yaml")),
        *sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")),
    ]
    bad = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in texts
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"DESIGN\.md|\.\./shared|/work/", line)
    ]
    assert bad == []


def test_configuration_page_is_generated():
    assert (ROOT / "docs/configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: python -m cluster.config_docs > docs/configuration.md"
    )


def test_architecture_names_every_module():
    text = (ROOT / "docs/architecture.md").read_text()
    named = set(re.findall(r"`([\w/*.-]+)`", text))
    globbed = {p for pattern in named if "*" in pattern for p in ROOT.glob(pattern)}
    modules = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py")) if p.name != "__init__.py"]
    modules += [p for pkg in PACKAGES for p in sorted((ROOT / pkg).iterdir()) if p.is_dir() and p.name != "__pycache__"]
    missing = [
        str(p.relative_to(ROOT))
        for p in modules
        if p not in globbed and str(p.relative_to(ROOT)) not in named and f"{p.relative_to(ROOT)}/" not in named
    ]
    assert missing == [], f"docs/architecture.md does not name {missing}"


# -- the checker catches each kind of mistake ---------------------------------------------------------------

BROKEN = """# A page

## Run it

See [the cluster page](cluster.md), [nothing](no-such-page.md), [a bad anchor](#no-such-heading),
[outside](../../elsewhere.md) and [fine](#run-it). The code is in `student/bezier.py` and `student/nope.py`;
set `student.steps` and `student.stepz`; `student.objectives` is a module, `runs/NAME/report.json` a run's.

```bash
bezier-distill run configs/digits.yaml --overwrite --set guides.block_size=64
bezier-distill run configs/nope.yaml --no-such-flag --set guides.blocksize=64
bezier-distill frobnicate runs/x
bezier-distill teachers add --run x --checkpoint y --replicas 2 \\
    --colour red
```
"""


def test_the_checker_reports_each_broken_thing():
    found = problems(BROKEN, ROOT / "docs" / "made-up.md")
    expected = [
        "link `no-such-page.md` goes nowhere",
        "`#no-such-heading`: no heading here has that anchor",
        "link `../../elsewhere.md` points outside the repository",
        "`student/nope.py` does not exist",
        "config key `student.stepz`",
        "`configs/nope.yaml` does not exist",
        "`bezier-distill run` has no option --no-such-flag",
        "config key `guides.blocksize`",
        "`bezier-distill` has no command 'frobnicate'",
        "`bezier-distill teachers add` has no option --colour",
    ]
    for text in expected:
        assert any(text in line for line in found), f"not reported: {text}\n" + "\n".join(found)
    assert len(found) == len(expected), "\n".join(found)  # and nothing that is right is reported


def test_the_checker_follows_synopses():
    assert check_command(" run CONFIG [--set KEY=VALUE ...] [--stop-after guides|student|eval] [--overwrite]") == []
    assert check_command(" teachers remove --run digits teacher-1 [--no-drain]") == []
    assert check_command(" teachers add/remove --run digits") == []
    assert check_command(" store export smoke --to out --colour") == [
        "`bezier-distill store export` has no option --colour"
    ]
