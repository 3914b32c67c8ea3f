"""Tables that are append-only in the database itself (triggers refuse UPDATE and DELETE), not only in Python."""
from __future__ import annotations

import sqlalchemy as sa


def append_only_sql(table: str) -> dict[str, list[str]]:
    """The statements, per dialect, that make `table` refuse UPDATE and DELETE."""
    message = f"{table} is append-only"
    return {
        "sqlite": [
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} BEGIN SELECT RAISE(ABORT, '{message}'); END",
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} BEGIN SELECT RAISE(ABORT, '{message}'); END",
        ],
        "postgresql": [
            f"CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{message}'; END $$",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()",
        ],
    }


def make_append_only(table: sa.Table) -> dict[str, list[str]]:
    """Create the triggers whenever the table is created from the models (tests, `create_all`)."""
    statements = append_only_sql(table.name)

    @sa.event.listens_for(table, "after_create")
    def _create_triggers(target, connection, **kw) -> None:
        for statement in statements.get(connection.dialect.name, []):
            connection.exec_driver_sql(statement)

    return statements
