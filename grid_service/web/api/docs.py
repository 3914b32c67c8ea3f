"""Serve Swagger UI's assets from the swagger-ui-bundle package, so /docs works offline."""
from __future__ import annotations

from flask import Flask, send_from_directory
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/docs/assets/"


def register_docs_assets(app: Flask) -> None:
    if app.config.get("OPENAPI_SWAGGER_UI_URL") != ASSETS_URL:
        return

    @app.get(ASSETS_URL + "<path:filename>")
    def swagger_ui_assets(filename: str):
        return send_from_directory(swagger_ui_path, filename)
