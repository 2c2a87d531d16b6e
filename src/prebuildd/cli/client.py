"""The CLI's HTTP client: which server and token to use, requests to `/api/v1`, errors turned into exits.

Every client command goes through here::

    api = connect(url, token)  # --url/--token (or PREBUILDD_URL/PREBUILDD_TOKEN), else `prebuildd login`
    me = api.get("/users/me")  # decoded JSON; on any error: "error: <server's message>" on stderr, exit 1
    response = api.send("GET", f"/templates/{quote(name)}")  # the raw response, errors left to the caller

Where the server and token come from, first found wins: the explicit ``url``/``token`` arguments (the
``--url``/``--token`` options, which Typer also fills from ``PREBUILDD_URL``/``PREBUILDD_TOKEN``), the same
environment variables, then the login saved by `prebuildd login` in ``<config dir>/config.json``. The config
directory is ``$PREBUILDD_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/prebuildd``, else ``~/.config/prebuildd``. A saved
token is only ever sent to the server it was saved for: pointing ``PREBUILDD_URL`` elsewhere needs its own token.

The organization a command acts in goes in the ``Prebuildd-Organization`` header: ``--org`` (anywhere on the
command line, or ``PREBUILDD_ORG``), else the one saved by `prebuildd login` or `prebuildd orgs use`, else none
(the server then uses the caller's only organization).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote as _quote

import httpx
import typer

CONFIG_FILE = "config.json"
ORGANIZATION_HEADER = "Prebuildd-Organization"
ORG_ENV = "PREBUILDD_ORG"
API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 30.0

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="PREBUILDD_URL",
        help="The server's URL (default: the one saved by `prebuildd login`).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="PREBUILDD_TOKEN",
        help="An API token, pbt_… (default: the one saved by `prebuildd login`).",
        show_default=False,
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and end the command with exit code ``code``."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def quote(segment: object) -> str:
    """A path segment (a name or id) safe to put in a URL path."""
    return _quote(str(segment), safe="")


# -- the saved login ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    url: str
    token: str
    organization: str | None = None
    """The organization commands act in by default (saved for this server)."""


def config_dir() -> Path:
    """Where `prebuildd login` keeps its config (see the module docstring)."""
    if explicit := os.environ.get("PREBUILDD_CONFIG_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "prebuildd"


def normalise_url(url: str) -> str:
    """``url`` without trailing slashes; ``http://`` added when no scheme is given."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    return url


def load_login() -> Login | None:
    """The saved login, or None when there is none (or it is unreadable)."""
    path = config_dir() / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}; fix it or run `prebuildd logout`")
    if not isinstance(data, dict) or not data.get("url") or not data.get("token"):
        return None
    org = data.get("organization")
    return Login(url=str(data["url"]), token=str(data["token"]), organization=str(org) if org else None)


def save_login(login: Login) -> Path:
    """Save ``login`` readable by this user only (file 0600, directory 0700); returns the file's path."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / CONFIG_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # the file may have existed with a looser mode
    with os.fdopen(descriptor, "w") as file:
        saved = {"url": login.url, "token": login.token}
        if login.organization:
            saved["organization"] = login.organization
        json.dump(saved, file, indent=2)
        file.write("\n")
    return path


def forget_login() -> bool:
    """Remove the saved login; False when there was none."""
    try:
        (config_dir() / CONFIG_FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def resolve(url: str | None = None, token: str | None = None) -> Login:
    """The server and token to use (see the module docstring); exits with a hint when either is missing."""
    url = url or os.environ.get("PREBUILDD_URL") or None
    token = token or os.environ.get("PREBUILDD_TOKEN") or None
    saved = load_login()
    if url is None:
        if saved is None:
            fail(
                "not logged in: run `prebuildd login URL --token-file FILE`, or set PREBUILDD_URL and "
                "PREBUILDD_TOKEN"
            )
        url = saved.url
    url = normalise_url(url)
    if token is None:
        if saved is None or normalise_url(saved.url) != url:
            fail(
                f"no API token for {url}: run `prebuildd login {url} --token-file FILE` or set PREBUILDD_TOKEN"
            )
        token = saved.token
    organization = os.environ.get(ORG_ENV) or None
    if organization is None and saved is not None and normalise_url(saved.url) == url:
        organization = saved.organization
    return Login(url=url, token=token, organization=organization)


def connect(url: str | None = None, token: str | None = None) -> ApiClient:
    """An ApiClient for the resolved server, token and organization."""
    login = resolve(url, token)
    return ApiClient(login.url, login.token, organization=login.organization)


# -- requests ----------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error response: its HTTP status, the server's ``message`` and structured ``detail``."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def api_error(response: httpx.Response) -> ApiError:
    """The error a failed response carries (any body: JSON ``{"message", "detail"}`` or not)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return ApiError(response.status_code, str(body["message"]), body.get("detail"))
    text = response.text.strip()[:500] or response.reason_phrase
    return ApiError(response.status_code, f"HTTP {response.status_code}: {text}")


def describe(error: ApiError, url: str) -> str:
    """The line shown to the user for ``error``, with what to do for authentication errors."""
    if error.status == 401:
        return f"{error.message} (server {url}); log in again with `prebuildd login {url} --token-file FILE`"
    return error.message


class ApiClient:
    """Requests to one server's ``/api/v1`` with one token.

    ``call`` (and ``get``/``post``/``patch``/``put``/``delete``) returns the decoded JSON, None for an empty
    body, and exits with the server's message for any error status. ``send`` returns the response whatever its
    status. Both exit with a clear message when the server cannot be reached.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        organization: str | None = None,
    ) -> None:
        self.url = normalise_url(url)
        self.organization = organization
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if organization:
            headers[ORGANIZATION_HEADER] = organization
        self._http = httpx.Client(
            base_url=f"{self.url}{API_PREFIX}", headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unreachable(self, exc: httpx.HTTPError) -> NoReturn:
        if isinstance(exc, httpx.ConnectError):
            fail(
                f"cannot connect to the prebuildd server at {self.url}: {exc}; is it running at that address?"
            )
        if isinstance(exc, httpx.TimeoutException):
            fail(f"the prebuildd server at {self.url} did not answer in time ({type(exc).__name__})")
        fail(f"request to the prebuildd server at {self.url} failed: {exc}")

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        """Send one request (``path`` below ``/api/v1``); the response, whatever its status."""
        headers = {"Content-Type": content_type} if content_type else None
        try:
            return self._http.request(
                method, path, json=json, params=_params(params), content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            self._unreachable(exc)

    def check(self, response: httpx.Response) -> Any:
        """The decoded JSON of a successful response (None when empty); exits on an error status."""
        if response.status_code >= 400:
            fail(describe(api_error(response), self.url))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            fail(f"the server at {self.url} answered {response.request.url.path} with something not JSON")

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON; exits with the server's message on an error."""
        response = self.send(
            method, path, json=json, params=params, content=content, content_type=content_type
        )
        return self.check(response)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        return self.call("POST", path, json=json, params=params)

    def patch(self, path: str, json: Any = None) -> Any:
        return self.call("PATCH", path, json=json)

    def put(self, path: str, json: Any = None) -> Any:
        return self.call("PUT", path, json=json)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def stream_ndjson(
        self, path: str, params: Mapping[str, Any] | None = None, *, read_timeout: float | None = None
    ) -> Iterator[Any]:
        """GET a stream of newline-delimited JSON, one decoded object per line, as they arrive.

        No read timeout by default: a followed stream may stay quiet for a long time. With ``read_timeout``, the
        iterator ends quietly once the stream has been silent that long (the caller reconnects when it wants). Exits on an error status or a line
        that is not JSON; the iterator simply ends when the server closes the stream. A plain JSON answer (a
        server that does not stream) yields its items, or itself when it is not a list.
        """
        timeout = httpx.Timeout(DEFAULT_TIMEOUT, read=read_timeout)
        try:
            with self._http.stream("GET", path, params=_params(params), timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    fail(describe(api_error(response), self.url))
                if response.headers.get("content-type", "").startswith("application/json"):
                    # a server that does not stream answered with one JSON document: its items, then the end
                    response.read()
                    document = self.check(response)
                    yield from document if isinstance(document, list) else [document]
                    return
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)
                    except ValueError:
                        fail(f"the server at {self.url} sent a line that is not JSON: {line[:200]!r}")
        except httpx.ReadTimeout as exc:
            if read_timeout is None:
                self._unreachable(exc)
        except httpx.HTTPError as exc:
            self._unreachable(exc)


def _params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters without the unset (None) ones; booleans as ``true``/``false``."""
    if params is None:
        return None
    return {
        key: (str(value).lower() if isinstance(value, bool) else value)
        for key, value in params.items()
        if value is not None
    }
