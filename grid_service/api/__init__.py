"""HTTP edge: blueprints only. Each view parses, calls one service, commits, dumps."""
from __future__ import annotations

from flask import Flask, g


def register_api(app: Flask, api) -> None:
    from . import catalog, docs, events, health, units

    for module in (health, catalog, units, events):
        api.register_blueprint(module.blp)
    docs.register_docs_assets(app)

    @app.before_request
    def _fresh_request_state() -> None:
        # A request normally gets its own app context, but one already pushed (a CLI command,
        # a test) is reused: never let the caller or the instant of a previous request leak in.
        for key in ("user", "now"):
            g.pop(key, None)
