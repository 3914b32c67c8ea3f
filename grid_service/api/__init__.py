"""HTTP edge: blueprints only. Each view parses, calls one service, commits, dumps."""
from __future__ import annotations

from flask import Flask, g


def register_api(app: Flask, api) -> None:
    from . import catalog, docs, events, health, phones, sla, units

    for module in (health, catalog, units, events, phones, sla):
        api.register_blueprint(module.blp)
    docs.register_docs_assets(app)
    from ..open311.views import register_open311

    register_open311(app, api)
    from ..hotline import admin_api, api as hotline_api

    for blueprint in (hotline_api.blp, admin_api.blp):
        api.register_blueprint(blueprint)

    @app.before_request
    def _fresh_request_state() -> None:
        # A request normally gets its own app context, but one already pushed (a CLI command,
        # a test) is reused: never let the caller or the instant of a previous request leak in.
        for key in ("user", "now"):
            g.pop(key, None)

    from .auth import register as register_auth  # after the reset above: it authenticates to count per-user limits

    register_auth(app, api)
