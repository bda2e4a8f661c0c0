"""Schemathesis hooks of test_api_fuzz (loaded by `st` through SCHEMATHESIS_HOOKS).

msgpack answers are checked against the schema like JSON ones; every route is called with
the credential its role needs: the admin token, the pod bootstrap token for register, and
for the other pod routes the credential of a live pod named "0" (what schemathesis
generates first for a pod id, so many generated bodies name that very pod and get past
the "credential of another pod" check). Read from the environment: FUZZ_API_URL,
FUZZ_ADMIN_TOKEN, FUZZ_POD_TOKEN.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any, ClassVar

import msgpack
import schemathesis

MSGPACK = "application/msgpack"
POD_ID = "0"


@schemathesis.deserializer(MSGPACK)
def _msgpack(_ctx: Any, response: Any) -> Any:
    return msgpack.unpackb(response.content)


def _post(path: str, body: Any, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        os.environ["FUZZ_API_URL"] + path, data=msgpack.packb(body), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": MSGPACK},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10.0) as answer:
            return answer.status, msgpack.unpackb(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, None


@schemathesis.auth(refresh_interval=None)  # asked for every case: the pod may be gone
class Credentials:
    """The bearer token of each case, by the role of its route."""

    pod_credential: ClassVar[str | None] = None

    def get(self, case: Any, _ctx: Any) -> str:
        path: str = case.operation.path
        if path == "/pod/v1/register":
            return os.environ["FUZZ_POD_TOKEN"]
        if not path.startswith("/pod/"):
            return os.environ["FUZZ_ADMIN_TOKEN"]
        return self._live_pod()

    def _live_pod(self) -> str:
        """Pod "0"'s credential, renewed by a heartbeat; registered again when the fuzzer's
        own calls made it leave or its lease ran out between pod routes."""
        cls = type(self)
        if cls.pod_credential is not None:
            status, _ = _post("/pod/v1/heartbeat", {"pod_id": POD_ID, "sessions": []},
                              cls.pod_credential)  # fmt: skip
            if status == 200:
                return cls.pod_credential
        status, body = _post("/pod/v1/register", {"pod_id": POD_ID, "capacity": 4},
                             os.environ["FUZZ_POD_TOKEN"])  # fmt: skip
        if status != 201:
            raise RuntimeError(f"registering the fuzz pod answered {status}")
        cls.pod_credential = str(body["credential"])
        return cls.pod_credential

    def set(self, case: Any, data: str, _ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.hook
def after_call(_ctx: Any, case: Any, response: Any) -> None:
    """A registration of pod "0" made by the fuzzer replaces ours: take its credential."""
    if case.operation.path != "/pod/v1/register" or response.status_code != 201:
        return
    [media] = response.headers.get("content-type", [""])  # lower-case names, listed values
    body = msgpack.unpackb(response.content) if media.startswith(MSGPACK) else response.json()
    if body.get("pod_id") == POD_ID:
        Credentials.pod_credential = str(body["credential"])
