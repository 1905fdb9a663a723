"""The dependency rules of the README's architecture section, checked: studio/ imports neither
gradio, sqlalchemy, storage/ nor components/, and loads no torch at import; only components/
imports gradio."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_CORE = {"gradio", "sqlalchemy", "alembic", "components", "storage", "agent_studio"}


def imported_modules(path: Path) -> set[str]:
    """The top-level names ``path`` imports anywhere in it."""
    return {name.split(".")[0] for name in _imports(path, module_level_only=False)}


def _project_files() -> list[Path]:
    """Every Python file of the project (its venvs left out)."""
    return [path for path in ROOT.rglob("*.py") if not any(part.startswith(".venv") for part in path.parts)]


def test_core_never_imports_ui_or_database_layers() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN_IN_CORE)
        for path in (ROOT / "studio").rglob("*.py")
        if imported_modules(path) & FORBIDDEN_IN_CORE
    }
    assert offenders == {}


def test_importing_the_core_loads_no_ui_database_or_torch() -> None:
    code = (
        "import sys, studio, studio.trace, studio.episodes.runner, studio.envs, studio.agents, studio.agents.react, studio.models;"
        "from studio.envs import make_env; make_env('gridworld');"
        "print(sorted(m for m in ('gradio', 'sqlalchemy', 'torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_only_components_import_gradio() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _project_files()
        if "components" not in path.parts and "tests" not in path.parts and "gradio" in imported_modules(path)
    ]
    assert offenders == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """Full names of what ``path`` imports (module level only, or anywhere in it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


MOVED = {"runner", "rollouts", "live", "verifiers", "values", "judge", "coverage", "sweep", "compare", "crossscore"}


def test_the_core_follows_its_layers() -> None:
    """Every module of studio/ sits in one layer of agent_studio.architecture.LAYERS, and imports at
    module level only from its own layer or those below (the old paths that moved are left out)."""
    from agent_studio.architecture import LAYERS, layer_of

    unplaced, upward = [], []
    for path in sorted((ROOT / "studio").rglob("*.py")):
        module = _module_name(path)
        if module == "studio" or (module.count(".") == 1 and module.split(".")[1] in MOVED):
            continue
        layer = layer_of(module)
        if layer is None:
            unplaced.append(module)
            continue
        for name in _imports(path, module_level_only=True):
            target = layer_of(name) if name.startswith("studio.") else None
            if target is not None and target > layer:
                upward.append(f"{module} ({LAYERS[layer][0]}) imports {name} ({LAYERS[target][0]})")
    assert unplaced == [] and upward == []


def test_the_outer_packages_import_only_inwards() -> None:
    """storage/ never imports components/ or the CLI; components/ never imports the CLI; nothing
    imports the old paths that moved (they are for other people's code, for one release)."""
    from agent_studio.architecture import OUTER, outer_of

    offenders = []
    for package, allowed in OUTER.items():
        for path in (ROOT / package).rglob("*.py"):
            for name in _imports(path, module_level_only=False):
                target = outer_of(name)
                if target is not None and target not in allowed:
                    offenders.append(f"{_module_name(path)} imports {name}")
    for path in _project_files():
        for name in _imports(path, module_level_only=False):
            moved = name.startswith("studio.") and name.count(".") == 1 and name.split(".")[1] in MOVED
            if moved or name == "agent_studio.storage.agreement":
                offenders.append(f"{path.relative_to(ROOT)} imports the old path {name}")
    assert offenders == []


def test_the_old_import_paths_still_work_with_a_warning() -> None:
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import studio.sweep, studio.runner, agent_studio.storage.agreement\n"
        "    from studio.verifiers import VerifiedPolicy\n"
        "import studio.evaluation.sweep, studio.episodes.runner, studio.evaluation.stats, studio.scaling.verifiers\n"
        "assert studio.sweep is studio.evaluation.sweep and studio.runner is studio.episodes.runner\n"
        "assert agent_studio.storage.agreement is studio.evaluation.stats\n"
        "assert VerifiedPolicy is studio.scaling.verifiers.VerifiedPolicy\n"
        "print(sorted({str(w.message).split(' moved')[0] for w in caught if w.category is DeprecationWarning}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == "['agent_studio.storage.agreement', 'studio.runner', 'studio.sweep', 'studio.verifiers']"
    )


def test_storage_and_components_are_imported_by_their_installed_names_only() -> None:
    """``agent_studio.storage`` and ``agent_studio.components`` everywhere: a bare ``storage`` import
    would load the same files a second time, as other modules with their own registries and state."""
    bare = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _project_files()
        for name in _imports(path, module_level_only=False)
        if name.split(".")[0] in {"storage", "components", "app"}
    ]
    assert bare == []


def test_the_bench_and_script_files_import_what_exists() -> None:
    """bench/ and scripts/ are run by hand, not by the suite: their imports of the project's modules
    and names are checked here (a module that moved would otherwise surface at the next benchmark)."""
    code = """
import ast, importlib, pathlib, warnings
warnings.simplefilter("error", DeprecationWarning)  # no old paths either
missing = []
for path in sorted([*pathlib.Path("bench").glob("*.py"), *pathlib.Path("scripts").glob("*.py")]):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in ("studio", "agent_studio", "tests"):
            try:
                module = importlib.import_module(node.module)
            except Exception as exc:
                missing.append(f"{path}: {node.module} ({exc})")
                continue
            missing += [f"{path}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
print(missing)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
