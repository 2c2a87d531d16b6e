"""/docs works offline: Swagger UI from the copy vendored in the package, nothing loaded from elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

from prebuildd.api.app import SWAGGER_UI
from tests.support.server import RunningServer

REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'""")


async def test_docs_page_and_every_asset_it_loads_come_from_prebuildd(running_server: RunningServer) -> None:
    async with running_server.client() as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "https://" not in html and "http://" not in html, "nothing from a CDN"
        assert '"validatorUrl": null' in html, "no online validator badge"
        references = {a or b for a, b in REFERENCE.findall(html)}
        assert references == {
            "/docs/assets/swagger-ui.css",
            "/docs/assets/favicon-32x32.png",
            "/docs/assets/swagger-ui-bundle.js",
            "/openapi.json",
        }
        for path in sorted(references):
            answer = await client.get(path)
            assert answer.status_code == 200, path
            assert len(answer.content) > 100, path
        script = await client.get("/docs/assets/swagger-ui-bundle.js")
        assert "javascript" in script.headers["content-type"]
        assert b"SwaggerUIBundle" in script.content
        missing = await client.get("/docs/assets/nothing.js")
        assert missing.status_code == 404


def test_the_vendored_copy_keeps_its_licence_and_notice() -> None:
    names = {path.name for path in Path(SWAGGER_UI).iterdir()}
    assert {"LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt", "README.md"} <= names
    assert "Apache License" in (SWAGGER_UI / "LICENSE").read_text()
    assert "SmartBear" in (SWAGGER_UI / "NOTICE").read_text()
    assert "swagger-ui-dist" in (SWAGGER_UI / "README.md").read_text()
