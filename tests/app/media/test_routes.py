"""Media over HTTP: thumbnails and originals by sample id, with caching and access rules."""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.db import transaction
from app.models import Dataset, ImportFormat, IssueReason, LabelClass, Role, Sample
from app.settings import Settings
from app.web.urls import thumbnail_url
from tests.conftest import Account, MakeAccount, browser_login


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    return root


@pytest.fixture
def engineer(make_account: MakeAccount) -> Account:
    return make_account(Role.ENGINEER)


def add_sample(
    app: FastAPI,
    root: Path,
    relative: str,
    *,
    image: Image.Image | None = None,
    image_format: str = "JPEG",
    error: IssueReason | None = None,
    missing: bool = False,
) -> int:
    """Writes the image (if any) under ``root`` and stores it as a sample, as an import would."""
    path = root / relative
    if image is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, image_format)
    data = path.read_bytes() if path.exists() else b""
    with transaction(app.state.session_factory) as session:
        dataset = session.query(Dataset).filter_by(name="media").one_or_none()
        if dataset is None:
            dataset = Dataset(
                name="media",
                root=str(root),
                source=str(root),
                source_format=ImportFormat.IMAGEFOLDER,
            )
            session.add(dataset)
            session.flush()
        label = session.query(LabelClass).filter_by(dataset_id=dataset.id, name="cat").one_or_none()
        if label is None:
            label = LabelClass(dataset_id=dataset.id, name="cat", sample_count=0)
            session.add(label)
            session.flush()
        sample = Sample(
            dataset_id=dataset.id,
            class_id=label.id,
            path=relative,
            byte_size=len(data),
            sha256=None if error else hashlib.sha256(data).hexdigest(),
            width=image.width if image and not error else None,
            height=image.height if image and not error else None,
            mode=image.mode if image and not error else None,
            image_format=None if error else image_format,
            error=error,
            error_detail="the file is empty" if error else None,
            missing=missing,
        )
        session.add(sample)
        session.flush()
        return sample.id


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.mode == "RGB"
        return image.size


def test_thumbnail_is_a_jpeg_of_the_requested_size_kept_for_good_when_its_url_names_the_content(
    app: FastAPI, client: TestClient, images: Path, engineer: Account
) -> None:
    sample_id = add_sample(
        app, images, "cat/a.png", image=Image.new("L", (300, 200)), image_format="PNG"
    )
    sha256 = hashlib.sha256((images / "cat/a.png").read_bytes()).hexdigest()
    url = thumbnail_url(sample_id, sha256, 128)
    response = client.get(url, headers=engineer.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert jpeg_size(response.content) == (128, 85)
    assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
    etag = response.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")


@pytest.mark.parametrize("query", ["", "?v=0123456789abcdef", "?v=ab"])
def test_a_thumbnail_url_that_does_not_name_the_content_is_revalidated(
    app: FastAPI, client: TestClient, images: Path, engineer: Account, query: str
) -> None:
    """No version, another content's, or too short to name one: a re-imported, changed file
    must not show its old image from the browser's cache."""
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (64, 48)))
    if query == "?v=ab":
        query = "?v=" + hashlib.sha256((images / "cat/a.jpg").read_bytes()).hexdigest()[:2]

    response = client.get(f"/media/samples/{sample_id}/thumb/96{query}", headers=engineer.headers)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-cache"


def test_thumbnail_is_cached_on_disk_once_and_reused(
    app: FastAPI, client: TestClient, images: Path, engineer: Account, settings: Settings
) -> None:
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (64, 48), (5, 6, 7)))
    first = client.get(f"/media/samples/{sample_id}/thumb/96", headers=engineer.headers)
    cached = [p for p in settings.thumbnail_dir.rglob("*") if p.is_file()]
    assert len(cached) == 1
    before = cached[0].stat()

    second = client.get(f"/media/samples/{sample_id}/thumb/96", headers=engineer.headers)
    assert second.content == first.content
    after = cached[0].stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p for p in settings.thumbnail_dir.rglob("*") if p.is_file()] == cached


def test_matching_if_none_match_gets_304_without_a_body(
    app: FastAPI, client: TestClient, images: Path, engineer: Account
) -> None:
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (64, 48)))
    sha256 = hashlib.sha256((images / "cat/a.jpg").read_bytes()).hexdigest()
    url = thumbnail_url(sample_id, sha256, 96)
    etag = client.get(url, headers=engineer.headers).headers["etag"]
    response = client.get(url, headers={**engineer.headers, "If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert "immutable" in response.headers["cache-control"]


def test_thumbnails_of_two_sizes_have_different_etags(
    app: FastAPI, client: TestClient, images: Path, engineer: Account
) -> None:
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (64, 48)))
    small = client.get(f"/media/samples/{sample_id}/thumb/96", headers=engineer.headers)
    large = client.get(
        f"/media/samples/{sample_id}/thumb/256",
        headers={**engineer.headers, "If-None-Match": small.headers["etag"]},
    )
    assert large.status_code == 200
    assert large.headers["etag"] != small.headers["etag"]


def test_size_not_offered_gets_422(
    app: FastAPI, client: TestClient, images: Path, engineer: Account
) -> None:
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (64, 48)))
    response = client.get(f"/media/samples/{sample_id}/thumb/100", headers=engineer.headers)
    assert response.status_code == 422
    assert "96, 128, 256, 512" in response.json()["error"]["message"]


def test_sample_with_an_import_error_gets_404_with_the_reason(
    app: FastAPI, client: TestClient, images: Path, engineer: Account
) -> None:
    (images / "cat" / "empty.jpg").write_bytes(b"")
    sample_id = add_sample(app, images, "cat/empty.jpg", error=IssueReason.EMPTY_FILE)
    for url in (f"/media/samples/{sample_id}/thumb/96", f"/media/samples/{sample_id}/original"):
        response = client.get(url, headers=engineer.headers)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert "empty_file" in response.json()["error"]["message"]


def test_sample_missing_at_the_last_import_gets_404(
    app: FastAPI, client: TestClient, images: Path, engineer: Account
) -> None:
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (8, 8)), missing=True)
    response = client.get(f"/media/samples/{sample_id}/thumb/96", headers=engineer.headers)
    assert response.status_code == 404
    assert "missing" in response.json()["error"]["message"]


def test_file_deleted_since_the_import_gets_404(
    app: FastAPI, client: TestClient, images: Path, engineer: Account
) -> None:
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (8, 8)))
    (images / "cat" / "a.jpg").unlink()
    response = client.get(f"/media/samples/{sample_id}/thumb/96", headers=engineer.headers)
    assert response.status_code == 404
    assert "cat/a.jpg" in response.json()["error"]["message"]


def test_unknown_sample_gets_404(client: TestClient, engineer: Account) -> None:
    response = client.get("/media/samples/999999/original", headers=engineer.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_file_swapped_for_a_symlink_out_of_the_root_is_refused(
    app: FastAPI, client: TestClient, images: Path, engineer: Account, tmp_path: Path
) -> None:
    secret = tmp_path / "elsewhere" / "secret.jpg"
    secret.parent.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(secret)
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (8, 8)))
    (images / "cat" / "a.jpg").unlink()
    (images / "cat" / "a.jpg").symlink_to(secret)
    for url in (f"/media/samples/{sample_id}/original", f"/media/samples/{sample_id}/thumb/96"):
        response = client.get(url, headers=engineer.headers)
        assert response.status_code == 403
        assert "outside the dataset root" in response.json()["error"]["message"]


def test_anonymous_request_gets_401(app: FastAPI, client: TestClient, images: Path) -> None:
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (8, 8)))
    for url in (f"/media/samples/{sample_id}/thumb/96", f"/media/samples/{sample_id}/original"):
        response = client.get(url)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"


def test_annotator_signed_in_with_the_browser_sees_media(
    app: FastAPI, client: TestClient, images: Path, make_account: MakeAccount
) -> None:
    annotator = make_account(Role.ANNOTATOR, token=False)
    sample_id = add_sample(app, images, "cat/a.jpg", image=Image.new("RGB", (8, 8)))
    browser_login(client, annotator.user.username)
    assert client.get(f"/media/samples/{sample_id}/thumb/96").status_code == 200
    assert client.get(f"/media/samples/{sample_id}/original").status_code == 200


def test_original_is_served_as_stored_with_its_content_type(
    app: FastAPI, client: TestClient, images: Path, engineer: Account
) -> None:
    sample_id = add_sample(
        app, images, "cat/a.png", image=Image.new("RGB", (30, 20), (1, 2, 3)), image_format="PNG"
    )
    response = client.get(f"/media/samples/{sample_id}/original", headers=engineer.headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == (images / "cat" / "a.png").read_bytes()
    assert response.headers["etag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
    again = client.get(
        f"/media/samples/{sample_id}/original",
        headers={**engineer.headers, "If-None-Match": response.headers["etag"]},
    )
    assert again.status_code == 304
