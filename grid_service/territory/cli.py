"""`flask territory …` (being written: GeoJSON import)."""
from flask.cli import AppGroup

territory_cli = AppGroup("territory", help="Territory units and boundaries.")
