"""Admin API for the integrations: API clients, the hotline category mapping, outbound deliveries."""
from __future__ import annotations

from datetime import timedelta

import marshmallow as ma
import sqlalchemy as sa
from flask.views import MethodView

from ...auth import clients
from ...auth.client_models import CLIENT_KINDS
from ...hotline import service
from ...infra.db import db
from ...infra.errors import Conflict, Invalid
from ...outbox import delivery
from ...outbox.models import DELIVERY_STATES, MESSAGE_KINDS
from ..kit.blueprint import GridBlueprint
from ..kit.errors import ErrorSchema
from ..kit.fields import LocalDateTime, Str
from ..kit.request import BEARER, request_now, require_role

blp = GridBlueprint("integrations", __name__, url_prefix="/api/v1",
                    description="Integrations (admins): API clients, hotline category mapping, outbound deliveries")

ADMIN_ERRORS = ((401, "No or invalid bearer token"), (403, "Admins only"))


def _admin_errors(func):
    for status, description in ADMIN_ERRORS:
        func = blp.alt_response(status, schema=ErrorSchema, description=description)(func)
    return blp.doc(security=BEARER)(func)


# ---------------------------------------------------------------- clients


class ClientSecretInfoSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    created_at = LocalDateTime(required=True)
    expires_at = LocalDateTime(allow_none=True, metadata={"description": "null while current; else the end of its grace period"})


class ClientSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    name = ma.fields.String(required=True)
    kind = ma.fields.String(required=True, metadata={"enum": list(CLIENT_KINDS)})
    unit_code = ma.fields.Function(lambda c: c.unit.code if c.unit else None, allow_none=True,
                                   metadata={"description": "Default unit of its petitions (属地兜底)"})
    callback_url = ma.fields.String(allow_none=True)
    is_active = ma.fields.Boolean(required=True)
    has_api_key = ma.fields.Function(lambda c: c.api_key_hash is not None, required=True)
    secrets = ma.fields.List(ma.fields.Nested(ClientSecretInfoSchema), required=True, metadata={"description": "Never the secrets themselves"})
    created_at = LocalDateTime(required=True)
    updated_at = LocalDateTime(required=True)


class ClientCreateSchema(ma.Schema):
    name = Str(required=True, validate=ma.validate.Regexp(
        clients.NAME_PATTERN.pattern, error="应为 1-64 个字符，限 A-Z a-z 0-9 _ -（1-64 of A-Z a-z 0-9 _ -）"))
    kind = Str(validate=ma.validate.OneOf(CLIENT_KINDS), load_default="hotline")
    callback_url = Str(validate=ma.validate.URL(schemes={"http", "https"}, require_tld=False), allow_none=True)
    unit_code = Str(validate=ma.validate.Length(1, 32), allow_none=True)


class ClientCreatedSchema(ma.Schema):
    client = ma.fields.Nested(ClientSchema, required=True)
    secret = ma.fields.String(required=True, metadata={"description": "whsec_… signing secret; shown once"})
    api_key = ma.fields.String(required=True, metadata={"description": "API key (Open311); shown once"})


class ClientRotateSchema(ma.Schema):
    grace_hours = ma.fields.Float(load_default=24.0, validate=ma.validate.Range(0, 720),
                                  metadata={"description": "How long the old secret stays accepted"})


class ClientRotatedSchema(ma.Schema):
    client = ma.fields.Nested(ClientSchema, required=True)
    secret = ma.fields.String(required=True, metadata={"description": "The new whsec_… secret; shown once"})


@blp.route("/clients")
class Clients(MethodView):
    @_admin_errors
    @blp.response(200, ClientSchema(many=True))
    def get(self):
        """API clients (hotline, Open311)."""
        require_role("admin")
        return clients.list_clients(db.session)

    @_admin_errors
    @blp.arguments(ClientCreateSchema())
    @blp.response(201, ClientCreatedSchema())
    @blp.alt_response(409, schema=ErrorSchema, description="The name is taken")
    def post(self, data):
        """Create a client; its signing secret and API key are in the answer, and only there."""
        require_role("admin")
        client, secret, api_key = clients.create_client(
            db.session, name=data["name"], kind=data["kind"], callback_url=data.get("callback_url"),
            unit_code=data.get("unit_code"), now=request_now())
        db.session.commit()
        return {"client": client, "secret": secret, "api_key": api_key}


@blp.route("/clients/<int:client_id>")
class ClientDetail(MethodView):
    @_admin_errors
    @blp.response(200, ClientSchema())
    @blp.alt_response(404, schema=ErrorSchema)
    def get(self, client_id):
        """One client."""
        require_role("admin")
        return clients.get_client_by_id(db.session, client_id)


@blp.route("/clients/<int:client_id>/rotate-secret")
class ClientRotate(MethodView):
    @_admin_errors
    @blp.arguments(ClientRotateSchema())
    @blp.response(200, ClientRotatedSchema())
    @blp.alt_response(404, schema=ErrorSchema)
    def post(self, data, client_id):
        """A new signing secret; the old one stays accepted (and signs outbound messages too) for the grace period."""
        require_role("admin")
        client = clients.get_client_by_id(db.session, client_id)
        secret = clients.rotate_secret(db.session, client, grace=timedelta(hours=data["grace_hours"]), now=request_now())
        db.session.commit()
        return {"client": client, "secret": secret}


@blp.route("/clients/<int:client_id>/deactivate")
class ClientDeactivate(MethodView):
    @_admin_errors
    @blp.response(200, ClientSchema())
    @blp.alt_response(404, schema=ErrorSchema)
    def post(self, client_id):
        """Refuse the client's signatures and key from now on; its outbound messages wait."""
        require_role("admin")
        client = clients.deactivate_client(db.session, clients.get_client_by_id(db.session, client_id), now=request_now())
        db.session.commit()
        return client


# ---------------------------------------------------------------- category mapping


EXTERNAL_CODE = ma.validate.Regexp(r"^(\*|[A-Za-z0-9_.-]{1,32})$",
                                   error="应为热线的类别编码（1-32 个字符，限 A-Z a-z 0-9 _ . -）或 *"
                                         "（the hotline's code (1-32 of A-Z a-z 0-9 _ . -) or *）")


class CategoryMappingSchema(ma.Schema):
    external_code = ma.fields.String(required=True, metadata={"description": "The hotline's code; `*` is the default"})
    category_code = ma.fields.Function(lambda m: m.category.code, required=True)
    category_name = ma.fields.Function(lambda m: m.category.name, required=True)
    note = ma.fields.String(required=True)
    updated_at = LocalDateTime(required=True)


class CategoryMappingSetSchema(ma.Schema):
    category_code = Str(required=True, validate=ma.validate.Length(1, 16), metadata={"description": "Our 小类 code"})
    note = Str(validate=ma.validate.Length(max=200), load_default="")


@blp.route("/hotline/category-map")
class Mappings(MethodView):
    @_admin_errors
    @blp.response(200, CategoryMappingSchema(many=True))
    def get(self):
        """The hotline's category codes and the 小类 each maps to (`*`: where unmapped codes go, flagged for triage)."""
        require_role("admin")
        return service.list_mappings(db.session)


@blp.route("/hotline/category-map/<string:external_code>")
class MappingDetail(MethodView):
    @_admin_errors
    @blp.arguments(CategoryMappingSetSchema())
    @blp.response(200, CategoryMappingSchema())
    @blp.alt_response(201, schema=CategoryMappingSchema, description="A new mapping")
    @blp.alt_response(409, schema=ErrorSchema, description="Changed concurrently; send again")
    def put(self, data, external_code):
        """Map a hotline category code (or `*`) onto our 小类."""
        require_role("admin")
        _check_code(external_code)
        row, created = service.set_mapping(db.session, external_code, data["category_code"], note=data["note"], now=request_now())
        _commit()
        return row, 201 if created else 200

    @_admin_errors
    @blp.response(204)
    @blp.alt_response(404, schema=ErrorSchema)
    def delete(self, external_code):
        """Remove a mapping: that code falls to `*` from now on."""
        require_role("admin")
        _check_code(external_code)
        service.delete_mapping(db.session, external_code)
        db.session.commit()


def _check_code(code: str) -> None:
    try:
        EXTERNAL_CODE(code)
    except ma.ValidationError as exc:
        raise Invalid("热线类别编码无效（invalid hotline category code）", {"external_code": exc.messages}) from None


def _commit() -> None:
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        raise Conflict("数据刚被同时修改，请重新提交（changed concurrently; send again）") from None


# ---------------------------------------------------------------- deliveries


class DeliverySchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    client = ma.fields.Function(lambda m: m.client.name, required=True)
    event_id = ma.fields.Integer(required=True)
    seq = ma.fields.Integer(required=True)
    kind = ma.fields.String(required=True, metadata={"enum": list(MESSAGE_KINDS)})
    msg_id = ma.fields.String(required=True, metadata={"description": "The webhook-id of every attempt"})
    state = ma.fields.String(required=True, metadata={"enum": list(DELIVERY_STATES)})
    attempts = ma.fields.Integer(required=True)
    next_attempt_at = LocalDateTime(allow_none=True)
    last_attempt_at = LocalDateTime(allow_none=True)
    last_status = ma.fields.Integer(allow_none=True)
    last_error = ma.fields.String(allow_none=True)
    created_at = LocalDateTime(required=True)
    delivered_at = LocalDateTime(allow_none=True)


class DeliveryPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(DeliverySchema), required=True)
    total = ma.fields.Integer(required=True)
    limit = ma.fields.Integer(required=True)
    offset = ma.fields.Integer(required=True)


class DeliveryQuerySchema(ma.Schema):
    state = Str(validate=ma.validate.OneOf(DELIVERY_STATES))
    client = Str(validate=ma.validate.Length(1, 64))
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(1, 200))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0, 10_000_000))


@blp.route("/deliveries")
class Deliveries(MethodView):
    @_admin_errors
    @blp.arguments(DeliveryQuerySchema(), location="query")
    @blp.response(200, DeliveryPageSchema())
    def get(self, args):
        """Outbound messages, newest first (`?state=dead`: the ones that gave up)."""
        require_role("admin")
        items, total = delivery.list_deliveries(db.session, state=args.get("state"), client_name=args.get("client"),
                                                limit=args["limit"], offset=args["offset"])
        return {"items": items, "total": total, "limit": args["limit"], "offset": args["offset"]}


@blp.route("/deliveries/<int:delivery_id>/retry")
class DeliveryRetry(MethodView):
    @_admin_errors
    @blp.response(200, DeliverySchema())
    @blp.alt_response(404, schema=ErrorSchema)
    @blp.alt_response(409, schema=ErrorSchema, description="Only a dead delivery can be retried")
    def post(self, delivery_id):
        """Give a dead delivery a fresh series of attempts, starting at the next run."""
        require_role("admin")
        message = delivery.retry_delivery(db.session, delivery_id, now=request_now())
        db.session.commit()
        return message

