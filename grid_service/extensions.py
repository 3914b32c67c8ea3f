"""Extensions, created unbound and initialised by the app factory."""
from __future__ import annotations

from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from .errors import ErrorSchema, handle_http_exception

# Stable constraint names from the first migration on, so later migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Sessions live for one request or one job; keeping loaded values after the commit lets the view
# dump what it just wrote without reloading every row and relationship.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
# Batch mode lets SQLite alter tables; compare_type makes autogenerate notice type changes.
migrate = Migrate(render_as_batch=True, compare_type=True)


class GridApi(Api):
    """flask-smorest's Api with the service's own error payload, documented and returned."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return handle_http_exception(error)

