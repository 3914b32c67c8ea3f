"""Grid Service: urban grid-management events, routed by territory and tracked against SLAs."""
from __future__ import annotations

import os
from zoneinfo import ZoneInfo

from flask import Flask

from .infra.bounds import configure_engine, engine_options
from .infra.db import db, migrate
from .infra.logs import configure_logging
from .privacy.phones import install_log_masking
from .web.kit.blueprint import GridApi
from .web.kit.errors import register_error_handlers
from .web.kit.security import install_security

__version__ = "0.1.0"


def create_app(config: object | str = "config.Config") -> Flask:
    """Build the WSGI app; `config` is a class, an object or an import path."""
    app = Flask(__name__, instance_path=os.environ.get("INSTANCE_PATH") or None)
    app.config.from_object(config)
    app.json.ensure_ascii = False
    configure_logging(ZoneInfo(app.config.get("GRID_TIMEZONE") or "Asia/Shanghai"))
    install_log_masking()  # no citizen's phone number in any log line
    register_extensions(app)
    register_error_handlers(app)
    install_security(app)
    register_subscribers()
    register_blueprints(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///") and uri != "sqlite://":
        os.makedirs(os.path.dirname(os.path.abspath(uri.removeprefix("sqlite:///"))), exist_ok=True)
    from . import models  # noqa: F401  (registers every table on the metadata)

    engine_options(app)

    db.init_app(app)
    with app.app_context():
        configure_engine(app, db.engine)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations"))
    app.config.setdefault("API_SPEC_OPTIONS", {})
    app.config["API_SPEC_OPTIONS"].setdefault(
        "components",
        {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "Opaque token from `flask users create`"}}},
    )
    from .events.catalog import CategoryCache
    from .sla.engine import SlaEngine
    from .territory.locator import locator_cache

    refresh = float(app.config.get("LOCATOR_REFRESH_SECONDS", 5))
    app.extensions["locator"] = locator_cache(refresh)
    app.extensions["categories"] = CategoryCache(refresh)
    app.extensions["sla"] = SlaEngine(refresh, extension_max_ratio=float(app.config.get("EXTENSION_MAX_RATIO", 1.0)))
    app.extensions["grid_api"] = api = GridApi()
    api.init_app(app)


def register_subscribers() -> None:
    """Who hears each published change of an event (events.changes): the inbox and the outbox."""
    from .events.changes import subscribe
    from .inbox import notices
    from .outbox import messages

    subscribe(notices.on_changes)
    subscribe(messages.on_changes)


def register_blueprints(app: Flask) -> None:
    from .web import register_web

    register_web(app, app.extensions["grid_api"])


def register_commands(app: Flask) -> None:
    from .cli import register_cli

    register_cli(app)
