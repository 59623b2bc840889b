"""The docs stay true to the code: README.md short with the same run and test commands, every
relative link (and #anchor) in README.md and docs/ resolves, every CLI command and option is in
docs/cli.md and every command line shown uses options that exist, every config key is in the user
guide, the data and GGUF pages name what the code supports, and every benchmark harness is in
docs/benchmarks.md with options its script accepts. (README == CI: tests/test_architecture.py.)"""
import dataclasses
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def code_lines(text: str) -> list[str]:
    """The lines of fenced code blocks, and each inline code span."""
    lines = [line for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M) for line in block.splitlines()]
    return lines + re.findall(r"`([^`\n]+)`", without_code_blocks(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)       # a link keeps its text
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", without_code_blocks(path.read_text(encoding="utf-8")), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def section(text: str, heading: str) -> str:
    """The text under `heading` (a whole heading line) up to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n") + len(heading) + 1
    end = re.search(rf"^#{{1,{level}}} ", text[start:], re.M)
    return text[start:start + end.start()] if end else text[start:]


# ---- README ------------------------------------------------------------------------------------
def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_run_command_is_the_test_command_without_the_tests():
    """The run and test commands install the same things; the test command is CI's (test_architecture)."""
    text = README.read_text(encoding="utf-8")
    run = re.search(r"^## Run it\n.*?```sh\n(.+?)\n```", text, re.S | re.M).group(1).strip()
    test = re.search(r"<!-- test-command -->\s*```sh\n(.+?)\n```", text, re.S).group(1).strip()
    assert run.endswith("&& .venv/bin/lorastudio")
    assert run.replace("-e . ", '-e ".[test]" ').replace(".venv/bin/lorastudio", ".venv/bin/python -m pytest") == test


# ---- links ---------------------------------------------------------------------------------------
def test_every_relative_link_points_to_something_that_exists():
    broken = []
    for doc in doc_files():
        text = re.sub(r"`[^`\n]*`", "", without_code_blocks(doc.read_text(encoding="utf-8")))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z][a-z+.-]*:", target):           # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading in {file.name})")
    assert not broken, "\n".join(broken)


def test_readme_links_the_docs_and_the_contributor_guides():
    text = README.read_text(encoding="utf-8")
    for target in ("docs/README.md", "docs/benchmarks.md", "CONTRIBUTING.md", "DESIGN.md"):
        assert f"]({target})" in text, target
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not list {page.name}"


# ---- the command line ----------------------------------------------------------------------------
def cli_options() -> dict[str, set[str]]:
    import argparse

    from lorastudio.core.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}


def test_cli_page_documents_every_command_and_option():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    every = section(text, "## Every command")
    options = cli_options()
    documented = re.findall(r"^### (\S+)$", every, re.M)
    assert sorted(documented) == sorted(options), "docs/cli.md's commands differ from the CLI's"
    for name, flags in options.items():
        part = section(every, f"### {name}")
        missing = sorted(f for f in flags - {"-h", "--help"} if not re.search(rf"`{re.escape(f)}[` ]", part))
        assert not missing, f"docs/cli.md, {name}: {missing} not documented"


def test_every_command_line_shown_uses_options_that_exist():
    options = cli_options()
    wrong = []
    for doc in doc_files():
        for line in code_lines(doc.read_text(encoding="utf-8")):
            for match in re.finditer(r"(?:^|[\s/])lorastudio ([a-z][a-z-]*)(.*)", line):
                command, rest = match.groups()
                if command not in options:
                    wrong.append(f"{doc.relative_to(ROOT)}: no command '{command}': {line.strip()}")
                    continue
                rest = rest.split(" #")[0]
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
                    if flag not in options[command]:
                        wrong.append(f"{doc.relative_to(ROOT)}: {command} has no {flag}: {line.strip()}")
    assert not wrong, "\n".join(wrong)


# ---- the config ----------------------------------------------------------------------------------
LEGACY_KEYS = {"training.gradient_checkpointing"}      # documented as mapped on load, not in the table


def config_keys() -> set[str]:
    from lorastudio.core.config import RunConfig
    keys = set()
    for f in dataclasses.fields(RunConfig):
        if dataclasses.is_dataclass(f.default_factory() if f.default_factory is not dataclasses.MISSING else None):
            keys |= {f"{f.name}.{g.name}" for g in dataclasses.fields(f.default_factory())}
        else:
            keys.add(f.name)
    return keys


def test_user_guide_lists_every_config_key():
    text = (DOCS / "user-guide.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `([a-z_.]+)` \|", section(text, "### Every key"), re.M))
    keys = config_keys()
    assert not keys - LEGACY_KEYS - table, f"config keys missing from the user guide: {sorted(keys - LEGACY_KEYS - table)}"
    assert not table - keys, f"the user guide lists keys the config does not have: {sorted(table - keys)}"
    assert "gradient_checkpointing" in text          # the legacy key is explained, as memory_mode


def test_data_page_names_every_format_and_file_type():
    from lorastudio.core.data.files import SUFFIX_KINDS
    from lorastudio.core.data.formats import FORMATS
    text = (DOCS / "data.md").read_text(encoding="utf-8")
    missing = [f for f in FORMATS if f"`{f}`" not in text] + [s for s in SUFFIX_KINDS if f"`{s}`" not in text]
    assert not missing, f"docs/data.md does not name {missing}"
    assert "<!-- data-pipeline-section -->" in text


# ---- GGUF ----------------------------------------------------------------------------------------
ARCH_NAMES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}


def test_gguf_page_names_every_architecture_and_type():
    from lorastudio.core.models.gguf_arch import ADAPTER_TYPES, ARCHITECTURES, REFUSED, TYPE_BITS
    text = (DOCS / "gguf.md").read_text(encoding="utf-8")
    export = text[text.index("<!-- gguf-export-section -->"):]
    assert set(ARCHITECTURES) == set(ARCH_NAMES), "a new GGUF architecture: name it in docs/gguf.md and here"
    for model_type in ARCHITECTURES:
        assert ARCH_NAMES[model_type] in export, model_type
    for family in {name.split()[0] for name in REFUSED.values()}:
        assert family in export, f"docs/gguf.md does not say {family} is refused"
    from lorastudio.core.models.gguf_arch import ADAPTER_ARCHITECTURES
    for arch in ADAPTER_ARCHITECTURES.values():         # every family issue 32 covers, with its adapter-only line
        assert arch.family in export, f"docs/gguf.md does not name {arch.family}"
    for step in ("### Ollama, step by step", "### LM Studio, step by step", "lms import"):
        assert step in text
    for t in (*TYPE_BITS, *ADAPTER_TYPES):
        assert f"`{t}`" in export, f"docs/gguf.md does not describe --type {t}"
    for line in ("ollama create", "llama-cli", "LM Studio", "llama-quantize"):
        assert line in text


# ---- benchmarks ----------------------------------------------------------------------------------
BENCH = ROOT / "tests" / "bench"


def test_every_benchmark_harness_is_documented():
    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted(BENCH.iterdir()) if p.suffix in (".py", ".sh") and p.name not in text]
    assert not missing, f"docs/benchmarks.md does not say what these are for: {missing}"


def test_benchmark_command_lines_use_options_their_scripts_accept():
    wrong, seen = [], 0
    for doc in doc_files():
        for line in code_lines(doc.read_text(encoding="utf-8")):
            for match in re.finditer(r"(?:python3?|bash|source) (tests/bench/[\w.]+)(.*)", line):
                script, rest = ROOT / match.group(1), match.group(2)
                seen += 1
                if not script.exists():
                    wrong.append(f"{doc.relative_to(ROOT)}: {match.group(1)} does not exist")
                    continue
                if script.suffix != ".py":
                    continue
                source = script.read_text(encoding="utf-8")
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
                    if f'"{flag}"' not in source:
                        wrong.append(f"{doc.relative_to(ROOT)}: {match.group(1)} has no {flag}")
    assert seen >= 10, "the benchmark commands were not found"
    assert not wrong, "\n".join(wrong)
