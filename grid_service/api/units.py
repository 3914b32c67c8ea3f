"""Units API (being written)."""
from flask_smorest import Blueprint

blp = Blueprint("units", __name__, url_prefix="/api/v1", description="Territory units (区/街道/社区/网格)")
