"""The dependency rules of the README's architecture section, checked: studio/ imports neither
gradio, sqlalchemy, storage/ nor components/, and loads no torch at import; only components/
imports gradio."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = {"gradio", "sqlalchemy", "alembic", "components", "storage"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


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
        for path in ROOT.rglob("*.py")
        if not any(part.startswith(".venv") for part in path.parts)  # .venv, .venv-vllm
        and "components" not in path.parts
        and "tests" not in path.parts
        and "gradio" in imported_modules(path)
    ]
    assert offenders == []
