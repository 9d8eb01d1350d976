"""Wire details the SDK hides: v1 paths, status codes, error bodies, headers."""

from __future__ import annotations

import httpx
import pytest

from remote_agents_local.e2b_local import launcher


@pytest.fixture
def api(e2b_server: launcher.LocalE2B):
    with httpx.Client(base_url=e2b_server.api_url, headers={"X-API-KEY": e2b_server.api_key}, timeout=10) as client:
        yield client


def test_v1_create_list_connect_resume_and_error_bodies(api: httpx.Client):
    created = api.post("/sandboxes", json={"templateID": "base", "timeout": 60, "metadata": {"v": "1"}})
    assert created.status_code == 201
    body = created.json()
    assert {"templateID", "sandboxID", "clientID", "envdVersion", "envdAccessToken"} <= body.keys()
    sandbox_id = body["sandboxID"]
    envd_headers = {"E2b-Sandbox-Id": sandbox_id, "X-Access-Token": body["envdAccessToken"]}
    try:
        listed = api.get("/sandboxes", params={"metadata": "v=1"})
        assert sandbox_id in [s["sandboxID"] for s in listed.json()]
        assert api.post(f"/sandboxes/{sandbox_id}/connect", json={}).status_code == 200
        assert api.post(f"/sandboxes/{sandbox_id}/resume", json={}).status_code == 409
        assert api.post(f"/sandboxes/{sandbox_id}/pause").status_code == 204
        assert api.post(f"/sandboxes/{sandbox_id}/pause").status_code == 409
        envd = api.get("/health", headers=envd_headers)
        assert envd.status_code == 502
        assert envd.json() == {"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502}
        assert api.post(f"/v2/sandboxes/{sandbox_id}/connect", json={"timeout": 30}).status_code == 201
        assert api.get("/health", headers=envd_headers).status_code == 204
        assert api.post(f"/sandboxes/{sandbox_id}/timeout", json={"timeout": 90}).status_code == 204
    finally:
        assert api.delete(f"/sandboxes/{sandbox_id}").status_code == 204
    gone = api.get(f"/sandboxes/{sandbox_id}")
    assert gone.status_code == 404 and gone.json()["code"] == 404 and gone.json()["message"]
    unauthorized = api.get("/v2/sandboxes", headers={"X-API-KEY": "nope"})
    assert unauthorized.status_code == 401 and unauthorized.json()["code"] == 401
    bad_key = api.post("/v2/sandboxes", json={"templateID": "base"}, headers={"Idempotency-Key": "Not Valid"})
    assert bad_key.status_code == 400


def test_injected_errors_carry_retry_after(tmp_path):
    args = ["--error-rate", "list=1", "--error-rate", "envd=1"]
    with launcher.start(tmp_path / "faulty", extra_args=args) as server:
        headers = {"X-API-KEY": server.api_key}
        answer = httpx.get(f"{server.api_url}/v2/sandboxes", headers=headers, timeout=10)
        assert answer.status_code in (429, 503)
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["code"] == answer.status_code
        created = httpx.post(f"{server.api_url}/v2/sandboxes", json={"templateID": "base"}, headers=headers, timeout=10)
        sandbox_id = created.json()["sandboxID"]
        envd = httpx.get(f"{server.api_url}/health", timeout=10,
                         headers={"E2b-Sandbox-Id": sandbox_id, "X-Access-Token": created.json()["envdAccessToken"]})
        assert envd.status_code in (429, 503) and envd.headers["retry-after"] == "1"
