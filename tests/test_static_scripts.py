"""The pages' scripts are ES modules served as they are (no bundler): every import among them
names a file in static/ that exports what is imported, and the pages load them as modules."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import PROJECT_ROOT

STATIC = PROJECT_ROOT / "static"
TEMPLATES = PROJECT_ROOT / "templates"
IMPORT = re.compile(r'^import \{([^}]*)\} from "(\./[^"]+|\.\./[^"]+)";', re.MULTILINE)
EXPORT = re.compile(r"^export (?:function|const|let|class) (\w+)", re.MULTILINE)
SCRIPT_TAG = re.compile(r'<script[^>]*src="/static/([^"]+)"[^>]*>')


def modules() -> list[Path]:
    return sorted(path for path in STATIC.rglob("*.js") if not path.name.endswith(".min.js"))


def test_every_import_names_a_file_that_exports_it() -> None:
    checked = 0
    for module in modules():
        for names, target in IMPORT.findall(module.read_text()):
            path = (module.parent / target).resolve()
            assert path.is_relative_to(STATIC.resolve()) and path.is_file(), (module, target)
            exported = set(EXPORT.findall(path.read_text()))
            wanted = {name.strip() for name in names.split(",") if name.strip()}
            assert wanted <= exported, (module, target, wanted - exported)
            checked += 1
    assert checked > 0


def test_scripts_that_import_load_as_modules() -> None:
    for template in TEMPLATES.rglob("*.html"):
        for tag in SCRIPT_TAG.finditer(template.read_text()):
            script = STATIC / tag.group(1)
            assert script.is_file(), (template, tag.group(0))
            if IMPORT.search(script.read_text()):
                assert 'type="module"' in tag.group(0), (template, tag.group(0))
