"""Real GeoReport v2 clients against a live server on loopback.

Third-party clients from PyPI (skipped when not installed; they are test-only tools):
- `georeport` 0.3.1: reads only (service list, definition, requests, one request), JSON and XML.
- `civicbot` 0.4.0 (`civicbot.open311.Open311Client`): reads in JSON and files requests with POST.
Plus the specification's own example exchange, spoken with nothing but urllib.
"""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from werkzeug.serving import make_server

from grid_service.auth.clients import create_client
from grid_service.infra.db import db
from grid_service.open311.attributes import seed_demo_attributes
from tests.helpers import T0


@pytest.fixture
def live(app, territory, categories, make_actor):
    """A threaded HTTP server on 127.0.0.1 (a free port) serving the app, with an Open311 key and a supervisor."""
    seed_demo_attributes(db.session, now=T0)
    _, _, api_key = create_client(db.session, name="partner-app", kind="open311", now=T0)
    db.session.commit()
    supervisor = make_actor("supervisor", "d")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"base": f"http://127.0.0.1:{server.server_port}/open311/v2", "root": f"http://127.0.0.1:{server.server_port}",
               "api_key": api_key, "supervisor_token": supervisor.token}
    finally:
        server.shutdown()
        thread.join(timeout=10)


def own_api_event(live, request_id: str) -> dict:
    """The event behind a service request, read from the service's own REST API as the district supervisor."""
    request = urllib.request.Request(f"{live['root']}/api/v1/events/{request_id}",
                                     headers={"Authorization": f"Bearer {live['supervisor_token']}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_spec_example_exchange_with_plain_urllib(live):
    """The POST of the specification's example (form-encoded, UTF-8), then every read in both formats."""
    form = {
        "api_key": live["api_key"], "jurisdiction_id": "150299", "service_code": "01001",
        "lat": "40.005", "long": "110.005", "address_string": "测试区幸福路 12 号", "email": "smith@example.cn",
        "device_id": "tt222111", "account_id": "123456", "first_name": "john", "last_name": "smith",
        "phone": "111111111", "description": "路边有大量生活垃圾堆放", "media_url": "http://img.example.cn/1.jpg",
        "attribute[AMOUNT]": "many", "attribute[SMELL]": "yes",
    }
    request = urllib.request.Request(f"{live['base']}/requests.xml", data=urllib.parse.urlencode(form).encode("utf-8"),
                                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
        created = ET.fromstring(response.read())
    request_id = created.findtext("request/service_request_id")
    assert created.findtext("request/account_id") == "123456"
    event = own_api_event(live, request_id)
    assert (event["source"], event["category"]["code"], event["grid"]["code"]) == ("open311", "01001", "15029900100101")

    for fmt, parse in (("json", json.loads), ("xml", ET.fromstring)):
        for path in ("discovery", "services", "services/01001", "requests", f"requests/{request_id}"):
            with urllib.request.urlopen(f"{live['base']}/{path}.{fmt}?jurisdiction_id=150299", timeout=10) as response:
                assert response.status == 200
                parse(response.read())
    with urllib.request.urlopen(f"{live['base']}/requests/{request_id}.json", timeout=10) as response:
        assert json.load(response)[0]["description"] == "路边有大量生活垃圾堆放"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(f"{live['base']}/requests.json", data=b"service_code=01001"), timeout=10)
    assert refused.value.code == 403
    assert json.load(refused.value) == [{"code": 403, "description": "缺少 api_key（api_key is required to create requests）"}]


def test_georeport_package_lists_and_reads_in_json_and_xml(live):
    georeport = pytest.importorskip("georeport", reason="pip install georeport==0.3.1 to run the third-party client check")
    request_id = _post(live, "路口垃圾桶旁堆满垃圾")
    for fmt in ("json", "xml"):
        client = georeport.GeoReport(live["base"], output_format=fmt)
        services = client.get_service_list()
        assert {s["service_code"] for s in services} == {"01001", "01002"}
        assert {s["group"] for s in services} == {"市容环境"}
        definition = client.get_service_definition("01001")
        attributes = definition["attributes"] if fmt == "json" else definition["attributes"]["attribute"]
        assert [a["code"] for a in attributes] == ["AMOUNT", "SMELL"]
        found = client.get_service_requests(service_code="01001", status="open")
        found = found if isinstance(found, list) else [found]  # xmltodict gives one request as a dict
        assert [r["service_request_id"] for r in found] == [request_id]
        one = client.get_service_request(request_id)
        assert (one["service_request_id"], one["status"], one["description"]) == (request_id, "open", "路口垃圾桶旁堆满垃圾")


def test_civicbot_open311_client_files_a_request_that_the_service_then_holds(live):
    pytest.importorskip("civicbot", reason="pip install civicbot==0.4.0 to run the third-party client check")
    from civicbot.http import HttpTransport, RateLimiter
    from civicbot.open311 import Open311Client
    from civicbot.registry import Endpoint

    # The library waits between calls to one host out of politeness; this host is our own loopback server.
    transport = HttpTransport(rate_limiter=RateLimiter(min_interval=0))
    client = Open311Client(Endpoint(id="grid-service", name="Grid Service", base_url=live["base"], write=True),
                           transport=transport, fmt="json")
    assert [s["service_code"] for s in client.list_services()] == ["01001", "01002"]
    prepared = client.create_request(
        "01001", dry_run=False, confirm="SEND", api_key=live["api_key"], validate_remote=True,
        lat=40.005, lng=110.005, description="绿化带里有人倾倒垃圾", attributes={"AMOUNT": "some"},
        email="li@example.cn", first_name="四", last_name="李", phone="13900001111", account_id="civic-1",
    )
    created = prepared.response[0]
    assert created["account_id"] == "civic-1" and created["service_notice"]
    request_id = created["service_request_id"]
    event = own_api_event(live, request_id)
    assert (event["source"], event["resident_name"], event["state"]) == ("open311", "李四", "reported")
    one = client.get_request(request_id)
    assert (one["status"], one["description"], one["lat"]) == ("open", "绿化带里有人倾倒垃圾", 40.005)
    assert [r["service_request_id"] for r in client.list_requests(service_request_ids=[request_id])] == [request_id]
    assert "email" not in one and "phone" not in one


def _post(live, description: str) -> str:
    form = {"api_key": live["api_key"], "service_code": "01001", "lat": "40.005", "long": "110.005",
            "description": description, "attribute[AMOUNT]": "few"}
    request = urllib.request.Request(f"{live['base']}/requests.json", data=urllib.parse.urlencode(form).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)[0]["service_request_id"]
