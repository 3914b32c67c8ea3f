"""HTTP edge: blueprints only. Each view parses, calls one service, commits, dumps."""
from __future__ import annotations

from flask import Flask


def register_api(app: Flask, api) -> None:
    from . import docs, health, units

    for module in (health, units):
        api.register_blueprint(module.blp)
    docs.register_docs_assets(app)
