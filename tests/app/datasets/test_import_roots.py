"""The finding: any file the server could read leaked through dataset registration (its lines
came back as class names), ``path`` told whether any path existed, and a 422 quoted a line.
Now paths must lie inside the import roots, the data directory is off limits, and no refusal
tells more than that."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.datasets.roots import ImportRoots
from app.errors import Invalid
from app.models import Role
from app.settings import Settings
from tests.app.datasets.files import image_bytes, write
from tests.app.datasets.test_api import create, wait_until_done
from tests.conftest import Account, MakeAccount


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    # The data directory lies beside the only import root. No secret key is given, so the
    # server writes one into the data directory: a file worth stealing.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        import_processes=2,
        import_roots=(tmp_path / "imports",),
    )


@pytest.fixture
def engineer(make_account: MakeAccount) -> Account:
    return make_account(Role.ENGINEER)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imports" / "pets"
    for index, rel in enumerate(["cat/a.png", "dog/b.png"]):
        write(root / rel, image_bytes("PNG", seed=index))
    return root


def refusal(client: TestClient, engineer: Account, **body: object) -> dict[str, object]:
    response = client.post("/api/datasets", json=body, headers=engineer.headers)
    assert response.status_code == 422, response.text
    error: dict[str, object] = response.json()["error"]
    return error


def test_files_outside_the_roots_cannot_be_read_as_class_lists(
    client: TestClient, engineer: Account, folder: Path, app: FastAPI, tmp_path: Path
) -> None:
    secret = app.state.settings.data_dir / "secret_key"
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    for path in ("/etc/passwd", str(secret), str(outside)):
        error = refusal(client, engineer, name="pets", path=str(folder), classes=path)
        assert "THRESHER_IMPORT_ROOTS" in str(error["message"])
        assert "root:x" not in str(error) and secret.read_text().strip() not in str(error)
    listed = client.get("/api/datasets", headers=engineer.headers).json()
    assert listed == []


def test_a_refused_path_says_the_same_whether_it_exists_or_not(
    client: TestClient, engineer: Account, tmp_path: Path
) -> None:
    existing = refusal(client, engineer, name="x", path="/etc")
    missing = refusal(client, engineer, name="x", path="/no/such/folder/anywhere")
    assert existing == missing
    # Inside the data directory (below the roots' parent) the same refusal.
    data = refusal(client, engineer, name="x", path=str(tmp_path / "data"))
    assert data == existing


def test_a_symlink_inside_a_root_cannot_lead_out_of_it(
    client: TestClient, engineer: Account, folder: Path, tmp_path: Path
) -> None:
    link = tmp_path / "imports" / "passwd.txt"
    link.symlink_to("/etc/passwd")
    error = refusal(client, engineer, name="pets", path=str(folder), classes=str(link))
    assert error["details"] == {"field": "classes"}
    escape = tmp_path / "imports" / "up"
    escape.symlink_to(tmp_path)
    refusal(client, engineer, name="pets", path=str(escape / "data"))


def test_inside_the_roots_folders_and_class_lists_import_and_lists_may_come_inline(
    client: TestClient, engineer: Account, folder: Path
) -> None:
    (folder.parent / "classes.txt").write_text("cat\ndog\n")
    accepted = create(
        client, engineer, name="pets", path=str(folder), classes=str(folder.parent / "classes.txt")
    )
    assert wait_until_done(client, engineer, accepted["import_run"]["id"])["status"] == "succeeded"
    dataset_id = accepted["dataset"]["id"]
    again = client.post(
        f"/api/datasets/{dataset_id}/imports",
        json={"classes": ["cat", "dog"]},
        headers=engineer.headers,
    )
    assert again.status_code == 202, again.text
    assert wait_until_done(client, engineer, again.json()["import_run"]["id"])["status"] == (
        "succeeded"
    )
    names = [
        c["name"]
        for c in client.get(f"/api/datasets/{dataset_id}/classes", headers=engineer.headers).json()
    ]
    assert sorted(names) == ["cat", "dog"]


def test_an_over_long_class_name_is_refused_without_quoting_it(
    client: TestClient, engineer: Account, folder: Path
) -> None:
    secretish = "s3cr3t" * 100
    error = refusal(client, engineer, name="pets", path=str(folder), classes=["cat", secretish])
    assert "class 2" in str(error["message"]) and "s3cr3t" not in str(error)


def test_the_data_directory_is_off_limits_even_under_a_root_but_for_the_demo(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    roots = ImportRoots(allowed=(tmp_path, data / "demo"), data_dir=data)
    for private in (data / "secret_key", data / "thresher.db", data, data / "demo" / ".." / "x"):
        with pytest.raises(Invalid):
            roots.check(str(private), field="classes")
    roots.check(str(data / "demo" / "images"), field="path")
    roots.check(str(tmp_path / "elsewhere" / "images"), field="path")
