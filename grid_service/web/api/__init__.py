"""The JSON API under /api/v1: blueprints only. Each view parses, calls one service, commits, dumps."""
from __future__ import annotations

from flask import Flask

from ..kit.blueprint import GridApi


def register_api(app: Flask, api: GridApi) -> None:
    from . import catalog, docs, events, health, people, phones, sla, units

    for module in (health, catalog, units, events, phones, sla, people):
        api.register_blueprint(module.blp)
    docs.register_docs_assets(app)
