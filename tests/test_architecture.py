"""The design's boundaries, checked: import contracts, no import cycles, processes started in one
place, folders of a readable size, a torch-free window, README == CI."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    declared = (ROOT / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")
    assert f"Contracts: {declared} kept, 0 broken" in result.stdout
    assert "jobs never import jobs" in result.stdout


def test_app_and_cli_import_without_heavy_libraries():
    code = ("import sys, lorastudio.app.launcher, lorastudio.core.cli, lorastudio.core.preflight, "
            "lorastudio.core.runs.folders, lorastudio.core.devices\n"
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes', 'datasets') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"<!-- test-command -->\s*```(?:sh|bash)?\n(.+?)\n```", readme, re.S)
    assert match, "README needs a fenced test command after <!-- test-command -->"
    command = match.group(1).strip()
    assert command in ci


PACKAGES = {"lorastudio.core": ROOT / "core", "lorastudio.app": ROOT / "app"}


def module_files() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))
            found[name] = path
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every lorastudio module `path` imports, at any depth (function-level imports count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in modules}
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def package_of(module: str, modules: dict[str, Path]) -> str:
    return module if modules[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def test_no_import_cycles_even_through_function_level_imports():
    modules = module_files()
    graph = {name: {m for m in imports_of(path, modules) if m != name and m != package_of(name, modules)}
             for name, path in modules.items()}
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_processes_are_started_in_one_module_of_core_only():
    starters = re.compile(r"\b(Popen|QProcess|subprocess\.(run|call|check_output|check_call))\b")
    found = sorted(str(path.relative_to(ROOT)) for path in module_files().values()
                   if starters.search(path.read_text(encoding="utf-8")))
    assert found == ["core/runtime/launcher.py"]


def test_no_folder_holds_more_than_sixteen_modules_at_its_top():
    for folder in [ROOT / "core", ROOT / "app", *(ROOT / "core").iterdir(), *(ROOT / "app").iterdir()]:
        if folder.is_dir() and folder.name != "__pycache__":
            modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
            assert len(modules) <= 16, f"{folder.relative_to(ROOT)} holds {len(modules)} modules"


def test_every_package_folder_is_in_the_wheel():
    """pyproject lists packages by hand (core/ and app/ are mapped under lorastudio.*): a folder left
    out works in an editable install and is missing from the wheel and the bundle."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"lorastudio." + ".".join(p.parent.relative_to(ROOT).parts)
             for top in ("core", "app", "resources") for p in (ROOT / top).rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"
