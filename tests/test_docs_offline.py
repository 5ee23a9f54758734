"""/docs and /redoc work on an air-gapped node: every script, style and icon they load is served by the daemon."""

from __future__ import annotations

import re

TOKEN = "docs-test-token-0123456789"


def _assets(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(r"url:\s*'([^']+)'", html)


def test_docs_pages_load_only_local_assets(daemon_factory):
    d = daemon_factory(token=TOKEN, env={"TELEMETRY_TOKEN": TOKEN})
    with d.client() as c, d.client() as anonymous:
        anonymous.headers.clear()  # the API's description and its page assets need no token
        for page in ("/docs", "/redoc"):
            r = anonymous.get(page)
            assert r.status_code == 200
            assets = _assets(r.text)
            assert any(a.endswith(".js") for a in assets), r.text
            for url in assets:
                assert url.startswith("/") and not url.startswith("//"), (page, url)
                got = anonymous.get(url)
                assert got.status_code == 200 and len(got.content) > 0, (page, url)
            assert "cdn" not in r.text.lower() and "fonts.googleapis" not in r.text
        assert anonymous.get("/docs-static/swagger-ui-bundle.js").headers["content-type"].startswith(
            ("application/javascript", "text/javascript"))
        assert anonymous.get("/api/v1/runs").status_code == 401  # the measurements still need it
        assert c.get("/api/v1/runs").status_code == 200
