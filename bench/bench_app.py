"""The app the intake benchmark serves: the real service plus one bare baseline endpoint.

POST /bench/bare inserts one row and commits, on the same database, engine settings and gunicorn
workers as the service: the floor any write endpoint pays. Only the benchmark imports this module.
"""
from __future__ import annotations

import sqlalchemy as sa
from flask import request

from grid_service import create_app
from grid_service.infra.db import db
from grid_service.infra.timeutil import utcnow

bench_rows = sa.Table(
    "bench_rows",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

app = create_app()


@app.post("/bench/bare")
def bare_insert():
    db.session.execute(bench_rows.insert().values(payload=request.get_data(as_text=True), created_at=utcnow()))
    db.session.commit()
    return {"ok": True}, 201
