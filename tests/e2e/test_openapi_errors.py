"""The OpenAPI document describes the errors the server really sends, and the server sends them in that shape."""

from __future__ import annotations

import httpx

from tests.support.server import RunningServer

ERROR_STATUSES = {"400", "401", "403", "404", "503"}


async def test_every_api_operation_documents_the_error_body_and_no_422(running_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=running_server.url) as client:
        schema = (await client.get("/openapi.json")).json()
    error_body = schema["components"]["schemas"]["ErrorBody"]
    assert set(error_body["required"]) >= {"code", "message"}
    assert "not_found" in str(schema["components"]["schemas"])  # the codes are an enum of the document
    operations = [
        (path, method, op)
        for path, item in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method, op in item.items()
    ]
    assert operations
    for path, method, op in operations:
        responses = op["responses"]
        assert "422" not in responses, (method, path)
        assert set(responses) >= ERROR_STATUSES, (method, path, sorted(responses))
        ref = responses["404"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody"), (method, path)
        for status in set(responses) & {"406", "409", "413"}:
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorBody"), (method, path, status)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    specific = {s for _, _, op in operations for s in op["responses"]}
    assert {
        "406",
        "409",
        "413",
    } <= specific  # import pending, conflicts and archive size are documented where sent


async def test_errors_carry_a_code_a_message_and_detail(running_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=running_server.url) as client:
        anonymous = await client.get("/api/v1/workspaces")
        owner = {"Authorization": f"Bearer {running_server.owner_token}"}
        missing = await client.get("/api/v1/templates/no-such-template", headers=owner)
        invalid = await client.post("/api/v1/users", json={"username": 7}, headers=owner)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthenticated"
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert invalid.status_code == 400 and invalid.json()["code"] == "invalid_request"
    assert {"field", "problem"} <= set(invalid.json()["detail"][0])
    for response in (anonymous, missing, invalid):
        assert set(response.json()) == {"code", "message", "detail"}
