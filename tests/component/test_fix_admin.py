"""The admin API's FIX hooks: a `fix` config is checked at create and patch (400 naming the
field, nothing changed), and `reset` leaves a request for the owner instead of deleting state."""

from __future__ import annotations

from typing import Any

from persistence.session_state import SessionStateStore
from raftorch.core.model import slot_id
from tests.component.test_admin_api import harness

CONFIG: dict[str, Any] = {
    "role": "initiator",
    "begin_string": "FIX.4.4",
    "sender_comp_id": "US",
    "target_comp_id": "VENUE",
    "host": "127.0.0.1",
    "port": 9876,
    "heartbeat_interval_seconds": 30,
}
NEW = {"name": "venue", "connector": "fix", "mode": "active_passive", "config": CONFIG}


async def test_create_refuses_a_bad_fix_config_naming_the_field(pg_dsn: str) -> None:
    async with harness(pg_dsn) as h:
        bad = await h.call("POST", "/api/v1/adapters", {**NEW, "config": {**CONFIG, "port": "x"}})
        assert bad.status == 400
        assert bad.body["error"] == {
            "code": "invalid_input",
            "message": "config.port: expected an integer 1-65535, got 'x'",
        }
        assert (await h.ok("GET", "/api/v1/adapters"))["items"] == []
        created = await h.call("POST", "/api/v1/adapters", NEW)
        assert created.status == 201, created.body


async def test_patch_checks_the_resulting_config(pg_dsn: str) -> None:
    async with harness(pg_dsn) as h:
        adapter = await h.ok("POST", "/api/v1/adapters", NEW)
        one = f"/api/v1/adapters/{adapter['id']}"
        bad = await h.call("PATCH", one, {"config": {**CONFIG, "role": "server"}})
        assert bad.status == 400 and bad.body["error"]["message"].startswith("config.role:")
        dictionary = await h.call("PATCH", one, {"config": {**CONFIG, "data_dictionary": "d"}})
        assert dictionary.status == 400
        assert (
            "config.data_dictionary: artifact 'd' must also be listed"
            in (dictionary.body["error"]["message"])
        )
        # Switching a valid config to another connector type is not this hook's business,
        # but switching a foreign config to `fix` is.
        other = await h.ok(
            "POST",
            "/api/v1/adapters",
            {**NEW, "name": "q", "connector": "tcp-client", "config": {"host": "h"}},
        )
        switched = await h.call("PATCH", f"/api/v1/adapters/{other['id']}", {"connector": "fix"})
        assert switched.status == 400 and "config." in switched.body["error"]["message"]
        assert (await h.ok("GET", one))["config"] == CONFIG
        fine = await h.call("PATCH", one, {"config": {**CONFIG, "port": 9877}})
        assert fine.status == 200 and fine.body["config"]["port"] == 9877


async def test_reset_of_a_fix_adapter_asks_its_owner_and_deletes_nothing(pg_dsn: str) -> None:
    async with harness(pg_dsn) as h:
        adapter = await h.ok("POST", "/api/v1/adapters", NEW)
        slot = slot_id(adapter["id"], 0)
        store = SessionStateStore(h.ctx.db)
        await store.put(slot, "fix.next_sender_seq", 42, 1, "pod-a")
        reply = await h.call("POST", f"/api/v1/adapters/{adapter['id']}/reset")
        assert reply.status == 202
        assert await store.get(slot, "fix.next_sender_seq") == 42  # the owner resets, fenced
        request = await store.pending_reset(slot)
        assert request is not None and request.requested_by
        assert await h.ctx.events.flush_once()
        events = (await h.ok("GET", f"/api/v1/adapters/{adapter['id']}/events"))["items"]
        assert any(e["description"].startswith("sequence reset requested by") for e in events)
