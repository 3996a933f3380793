"""The server installs and runs without the ML stack."""

from __future__ import annotations

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
