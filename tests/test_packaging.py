"""The server installs and runs without the ML stack: app/ needs only ml.core, and ml.core
imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


BLOCK_ML_STACK = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "torchvision", "timm", "cleanlab"}:
                raise ImportError("blocked: " + name)
    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter where torch and friends cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_ML_STACK + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_server_and_cli_import_without_torch(tmp_path: Path) -> None:
    result = run_blocked(
        f"""
        from app.main import create_app
        from app.settings import Settings
        from app.cli import cli
        create_app(Settings(data_dir={str(tmp_path)!r}, secret_key="x" * 40))
        assert not any(m.split(".")[0] == "torch" for m in sys.modules)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_ml_core_module_imports_without_torch() -> None:
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "ml" / "core").rglob("*.py")
    )
    assert "ml.core.protocol.jobs" in modules
    result = run_blocked(
        f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_ml_never_imports_app() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "ml").rglob("*.py")
        for line in path.read_text().splitlines()
        if line.lstrip().startswith(("import app", "from app"))
    ]
    assert offenders == []


#: The only imports of ``ml`` outside ``ml.core`` that ``app`` may make: the ``thresher`` CLI
#: mounts the ML commands and the worker command (both modules import nothing heavy at import
#: time; their commands import torch when they run).
APP_IMPORTS_OUTSIDE_ML_CORE = {
    ("app/cli.py", "ml.cli"),
    ("app/cli.py", "ml.worker.cli"),
}


def test_app_imports_only_ml_core_from_ml() -> None:
    found = set()
    for path in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                if module.split(".")[0] == "ml" and not module.startswith("ml.core"):
                    found.add((str(path.relative_to(ROOT)), module))
    assert found == APP_IMPORTS_OUTSIDE_ML_CORE
