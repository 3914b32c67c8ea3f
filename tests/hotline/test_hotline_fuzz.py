"""Schema-driven fuzzing of the integration endpoints past their gates: the hotline's endpoints with
valid signatures, the admin ones as an admin (tests/web/test_fuzz_openapi.py only sees their 401/403)."""
from __future__ import annotations

import json
from urllib.parse import unquote

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core import NOT_SET

from grid_service.auth.clients import get_client
from grid_service.infra.db import db
from tests.helpers import act

SIGNED_EXCLUDED = [
    schemathesis.checks.positive_data_acceptance,  # a valid body may still name a petition of no one
    # The request is sent by hand (it must be signed over its exact bytes): the checks that re-send it unsigned
    # would only see 401, which is right but says nothing.
    schemathesis.checks.missing_required_header, schemathesis.checks.ignored_auth,
    schemathesis.checks.unsupported_method, schemathesis.checks.negative_data_rejection,
]


@pytest.fixture
def gates(hotline, make_actor):
    """An admin, and the hotline client with one registered petition (GD0001) and a callback URL."""
    get_client(db.session, "h12345").callback_url = "http://127.0.0.1:9/hook"
    db.session.commit()
    event_id = hotline.petition().json["event_id"]
    act(make_actor("supervisor", "c11"), event_id, "register")
    return {"admin": make_actor("admin", "d"), "hotline": hotline}


@pytest.fixture
def integration_schema(app, gates):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("integration_schema").include(path_regex="^/api/v1/(hotline|clients|deliveries)")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_integration_endpoints_conform_past_their_gates(case, gates, app):
    path = case.formatted_path
    if not path.startswith("/api/v1/hotline/petitions"):
        case.call_and_validate(headers=gates["admin"].headers, excluded_checks=[schemathesis.checks.positive_data_acceptance])
        return
    body = b"" if case.body is NOT_SET else case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    payload = f"GET {unquote(path)}".encode() if case.method.upper() == "GET" else body
    headers = gates["hotline"].headers(payload) | {"Content-Type": "application/json"}
    response = app.test_client().open(path, method=case.method, data=body or None, headers=headers,
                                      query_string=case.query or None)
    assert response.status_code != 401, response.json  # the signature always holds: every answer is about the data
    case.validate_response(response, excluded_checks=SIGNED_EXCLUDED)
