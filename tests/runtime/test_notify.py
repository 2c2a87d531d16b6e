"""The webhook notifier posts to the URL it was given but never logs its credentials, path or query."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from prebuildd.runtime.notify import WebhookNotifier

SECRETS = ("hunter2", "T000-secret-path", "q-token")


async def test_webhook_urls_are_logged_without_credentials() -> None:
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"http://bot:hunter2@127.0.0.1:{port}/hooks/T000-secret-path?token=q-token"
        with capture_logs() as logs:
            assert await WebhookNotifier(url, attempts=1).send({"presets": []})
            # A closed port: the failure line, with the error text, is redacted the same way.
            server.close()
            await server.wait_closed()
            assert not await WebhookNotifier(url, attempts=1).send({"presets": []})
    finally:
        server.close()
    assert len(requests) == 1 and b"/hooks/T000-secret-path?token=q-token" in requests[0]  # sent as given
    assert [entry["event"] for entry in logs] == ["notify.webhook_sent", "notify.webhook_failed"]
    for entry in logs:
        assert entry["url"].startswith("http://REDACTED:REDACTED@127.0.0.1:"), entry
        text = repr(entry)
        assert not any(secret in text for secret in SECRETS), entry
