"""The operator commands' HTTP client: any replica of a cluster, JSON, bearer token.

It tries the next replica when one is unreachable or answers 503 and then keeps
the one that worked. Every failure is an `OpsError` with one line for stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

API_ENV = "RAFTORCH_CLI_API"
TOKEN_ENV = "RAFTORCH_CLI_TOKEN"
EXIT_FAILURE = 1
EXIT_USAGE = 2
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_PAGES = 10_000  # 10 million adapters at the largest page: a loop, not a list


class OpsError(Exception):
    """An expected failure: one line for stderr and the exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(OpsError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class ClusterUnavailable(OpsError):
    """No replica answered (unreachable, or 503 from each): worth trying again later."""


# --- HTTP -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


Transport = Callable[[str, str, bytes | None, Mapping[str, str]], Response]
"""``(method, url, body, headers) -> Response``; raises OSError when unreachable."""


def urllib_transport(
    method: str, url: str, body: bytes | None, headers: Mapping[str, str]
) -> Response:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as answer:
            return Response(answer.status, answer.read())
    except urllib.error.HTTPError as err:
        with err:
            return Response(err.code, err.read())
    except http.client.HTTPException as exc:  # a broken answer: treat the replica as down
        raise OSError(f"bad HTTP answer: {exc!r}") from exc


def reason_of(exc: OSError) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        reason: object = exc.reason
        return reason_of(reason) if isinstance(reason, OSError) else str(reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or str(exc)


def error_message(response: Response) -> str:
    """The server's one-line message from ``{"error": {"code", "message"}}``, else the text."""
    try:
        error = json.loads(response.body)["error"]
        return f"{error['message']} ({response.status} {error['code']})"
    except (ValueError, KeyError, TypeError):
        text = response.body.decode("utf-8", "replace").strip().splitlines()
        return f"HTTP {response.status}" + (f": {text[0][:200]}" if text else "")


class Client:
    """The admin API of a cluster, over any of its replicas (sticking to one that works)."""

    def __init__(self, urls: Sequence[str], token: str, transport: Transport = urllib_transport):
        self.urls = [u.rstrip("/") for u in urls]
        self.token = token
        self.transport = transport
        self._first = 0

    def prefer(self, url: str) -> None:
        """Try `url` first from now on, if it is one of ours."""
        if url.rstrip("/") in self.urls:
            self._first = self.urls.index(url.rstrip("/"))

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> Response:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        failures = []
        for i in range(len(self.urls)):
            index = (self._first + i) % len(self.urls)
            url = self.urls[index]
            try:
                response = self.transport(method, url + path, body, headers)
            except OSError as exc:
                failures.append(f"{url}: {reason_of(exc)}")
                continue
            if response.status == 503:
                failures.append(f"{url}: {error_message(response)}")
                continue
            self._first = index
            self._check(response)
            return response
        raise ClusterUnavailable(f"cluster unavailable: {'; '.join(failures)}")

    def _check(self, response: Response) -> None:
        if response.status == 401:
            raise OpsError(
                "the token was refused (401): it is missing, mistyped, revoked or not from "
                f"this cluster; check --token or {TOKEN_ENV}"
            )
        if response.status == 403:
            raise OpsError(f"the token's role may not do this: {error_message(response)}")
        if response.status >= 400:
            raise OpsError(error_message(response))

    def _json(self, response: Response) -> Any:
        if not response.body:
            return None
        try:
            return json.loads(response.body)
        except ValueError:
            raise OpsError(f"not JSON from the server: {response.body[:80]!r}") from None

    def get_json(self, path: str) -> Any:
        return self._json(self.request("GET", path))

    def get_items(self, path: str) -> list[Any]:
        """Every item of a paged list (`items`, then `next_cursor` until it is null)."""
        items: list[Any] = []
        cursor: str | None = None
        for _page in range(MAX_PAGES):
            query = "" if cursor is None else f"?cursor={urllib.parse.quote(cursor, safe='')}"
            page = self.get_json(path + query)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if cursor is None:
                return items
        raise OpsError(f"GET {path}: more than {MAX_PAGES} pages; the list keeps growing")

    def get_bytes(self, path: str) -> bytes:
        return self.request("GET", path).body

    def post_json(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        return self._json(self.request("POST", path, data, "application/json"))

    def post_bytes(self, path: str, content: bytes, content_type: str) -> Any:
        return self._json(self.request("POST", path, content, content_type))

    def delete(self, path: str) -> None:
        self.request("DELETE", path)


def client_from(
    args: argparse.Namespace,
    environ: Mapping[str, str] = os.environ,
    transport: Transport = urllib_transport,
) -> Client:
    raw = args.api or [environ.get(API_ENV, "")]
    urls = [u.strip() for item in raw for u in item.split(",") if u.strip()]
    if not urls:
        raise UsageError(f"no cluster address: give --api URL or set {API_ENV}")
    for url in urls:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise UsageError(f"--api: expected an http(s) URL, got {url!r}")
    token = args.token or environ.get(TOKEN_ENV, "")
    if not token:
        raise UsageError(f"no token: give --token or set {TOKEN_ENV}")
    return Client(urls, token, transport)


# --- output ---------------------------------------------------------------------------
