"""The edges over HTTP: the JSON API, the signed hotline, Open311 (and the console). They share the
toolkit in `web.kit` and never import each other; nothing outside `web` but the app factory imports
anything in it. `register_web` mounts them all."""
from __future__ import annotations

from flask import Flask

from .kit.blueprint import GridApi


def register_web(app: Flask, api: GridApi) -> None:
    """Every edge's blueprints on `app`, documented in `api`'s OpenAPI document."""
    from . import api as json_api, hotline
    from .api import auth, hotline_admin
    from .kit.bodies import install_request_guards
    from .kit.request import forget_previous_request
    from .open311.views import register_open311

    json_api.register_api(app, api)
    register_open311(app, api)
    for blueprint in (hotline.blp, hotline_admin.blp):
        api.register_blueprint(blueprint)
    app.before_request(forget_previous_request)
    auth.register(app, api)  # after the reset above: it authenticates to count per-user limits
    install_request_guards(app, api)  # last: the head's limits go first, the body's wrap every view above
