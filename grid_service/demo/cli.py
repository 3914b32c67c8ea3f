"""`flask demo …` (being written: the demo district)."""
from flask.cli import AppGroup

demo_cli = AppGroup("demo", help="The demo district.")
