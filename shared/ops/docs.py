"""Swagger UI, served from the files of the swagger-ui-bundle package (no CDN)."""

from __future__ import annotations

from pathlib import Path

from swagger_ui_bundle import swagger_ui_path

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Ad moderation API</title>
  <link rel="stylesheet" href="{static}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{static}/swagger-ui-bundle.js"></script>
  <script src="{static}/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{openapi_url}",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    }});
  </script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    return Path(str(swagger_ui_path))


def docs_page(*, static_prefix: str, openapi_url: str) -> str:
    return _PAGE.format(static=static_prefix, openapi_url=openapi_url)
