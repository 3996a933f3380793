"""The API docs at /docs load only files this server serves, under the site's CSP."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from app.security_headers import SECURITY_HEADERS

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class _References(HTMLParser):
    """Every URL the page loads (src and href), and the text of every inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


@SQLITE
def test_docs_page_loads_only_same_origin_files_and_each_is_served(client: TestClient) -> None:
    page = client.get("/docs")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    references = _References()
    references.feed(page.text)
    assert references.inline_scripts == []
    assert len(references.urls) == 4  # icon, stylesheet, Swagger UI's bundle, its start script
    expected_types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in references.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"].split(";")[0] == expected_types[suffix], url
        assert asset.content
    schema = client.get(page.text.split('data-openapi-url="')[1].split('"')[0])
    assert schema.status_code == 200
    assert "/api/me" in schema.json()["paths"]


@SQLITE
@pytest.mark.parametrize(
    "path",
    [
        "/redoc",
        "/docs/oauth2-redirect",
        "/docs/swagger-ui/index.html",  # in the package's folder, but not a file the page loads
        "/docs/swagger-ui/..%2f..%2f__init__.py",
    ],
)
def test_only_the_docs_page_and_its_files_are_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404
