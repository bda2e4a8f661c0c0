"""A QuickFIX counterparty for the `fix` connector's tests, run as its own process.

``python -m tests.fix.counterparty CONFIG.json`` starts a QuickFIX acceptor or initiator
(FileStore and FileLog under the config's directory, data dictionaries from the
quickfix-py package) and records every message it receives or sends as one JSON line
in ``record.jsonl``, so a test can count what reached QuickFIX's application exactly.
It reads commands, one JSON object per line, from stdin:

- ``{"cmd": "send", "count": N, "rate": R, "first": K}``: N ExecutionReports with ExecID
  ``er-K`` .. at R per second (in the background; also while disconnected: QuickFIX keeps
  them in its store and resends them when asked);
- ``{"cmd": "invalid"}``: one ExecutionReport missing required fields;
- ``{"cmd": "test_request", "id": ID}``: a TestRequest;
- ``{"cmd": "quit"}``: stop.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import quickfix as fix

SHARE = Path(sys.prefix) / "share" / "quickfix"
TAGS = {
    "seq": 34,
    "type": 35,
    "possdup": 43,
    "text": 58,
    "begin": 7,
    "end": 16,
    "new": 36,
    "gapfill": 123,
    "reset": 141,
    "testreqid": 112,
    "ref": 45,
    "reason": 373,
    "clordid": 11,
    "execid": 17,
}


def settings_text(config: dict[str, Any], root: Path) -> str:
    fixt = config["begin_string"] == "FIXT.1.1"
    lines = [
        "[DEFAULT]",
        f"ConnectionType={config['role']}",
        f"FileStorePath={root / 'store'}",
        f"FileLogPath={root / 'log'}",
        "StartTime=00:00:00",
        "EndTime=00:00:00",
        "UseDataDictionary=Y",
        "ValidateUserDefinedFields=N",
        "ResetOnLogon=N",
        "ResetOnLogout=N",
        "ResetOnDisconnect=N",
        "PersistMessages=Y",
        "LogonTimeout=10",
        "ReconnectInterval=1",
        f"HeartBtInt={config.get('heartbeat', 1)}",
        "[SESSION]",
        f"BeginString={config['begin_string']}",
        f"SenderCompID={config['sender']}",
        f"TargetCompID={config['target']}",
    ]
    if fixt:
        lines += [
            "DefaultApplVerID=FIX.5.0SP2",
            f"TransportDataDictionary={SHARE / 'FIXT11.xml'}",
            f"AppDataDictionary={SHARE / 'FIX50SP2.xml'}",
        ]
    else:
        lines.append(f"DataDictionary={SHARE / (config['begin_string'].replace('.', '') + '.xml')}")
    if config["role"] == "acceptor":
        lines += ["SocketAcceptHost=127.0.0.1", f"SocketAcceptPort={config['port']}"]
    else:
        lines += ["SocketConnectHost=127.0.0.1", f"SocketConnectPort={config['port']}"]
    return "\n".join(lines) + "\n"


class Recorder(fix.Application):  # type: ignore[misc]
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.session: Any = None

    def write(self, entry: dict[str, Any]) -> None:
        entry["t"] = time.time()
        with self._lock:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()

    def _entry(self, direction: str, message: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"dir": direction}
        for name, tag in TAGS.items():
            for part in (message.getHeader(), message):
                if part.isSetField(tag):
                    entry[name] = part.getField(tag)
        return entry

    def onCreate(self, session_id: Any) -> None:
        self.session = session_id

    def onLogon(self, session_id: Any) -> None:
        session = fix.Session.lookupSession(session_id)
        self.write(
            {
                "event": "logon",
                "next_sender": session.getExpectedSenderNum(),
                "next_target": session.getExpectedTargetNum(),
            }
        )

    def onLogout(self, session_id: Any) -> None:
        self.write({"event": "logout"})

    def toAdmin(self, message: Any, session_id: Any) -> None:
        self.write(self._entry("out", message))

    def fromAdmin(self, message: Any, session_id: Any) -> None:
        self.write(self._entry("in", message))

    def toApp(self, message: Any, session_id: Any) -> None:
        self.write(self._entry("out", message))

    def fromApp(self, message: Any, session_id: Any) -> None:
        self.write(self._entry("in", message))


def execution_report(exec_id: str, *, valid: bool = True) -> Any:
    message = fix.Message()
    message.getHeader().setField(fix.MsgType("8"))
    message.setField(17, exec_id)
    if valid:
        message.setField(37, f"ord-{exec_id}")
        message.setField(150, "0")
        message.setField(39, "0")
        message.setField(54, "1")
        message.setField(151, "100")
        message.setField(14, "0")
        message.setField(6, "0")
    message.setField(55, "RAFT")
    return message


def send_stream(app: Recorder, count: int, rate: float, first: int) -> None:
    started = time.monotonic()
    for i in range(count):
        due = started + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        fix.Session.sendToTarget(execution_report(f"er-{first + i}"), app.session)
    app.write({"event": "sent", "count": count, "first": first})


def command(app: Recorder, line: str) -> bool:
    order = json.loads(line)
    if order["cmd"] == "send":
        args = (app, int(order["count"]), float(order["rate"]), int(order.get("first", 1)))
        threading.Thread(target=send_stream, args=args, daemon=True).start()
    elif order["cmd"] == "invalid":
        fix.Session.sendToTarget(execution_report("invalid-1", valid=False), app.session)
    elif order["cmd"] == "test_request":
        message = fix.Message()
        message.getHeader().setField(fix.MsgType("1"))
        message.setField(112, str(order["id"]))
        fix.Session.sendToTarget(message, app.session)
    elif order["cmd"] == "quit":
        return False
    return True


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    root = Path(sys.argv[1]).parent
    (root / "settings.cfg").write_text(settings_text(config, root))
    settings = fix.SessionSettings(str(root / "settings.cfg"))
    app = Recorder(root / "record.jsonl")
    store, logs = fix.FileStoreFactory(settings), fix.FileLogFactory(settings)
    kind = fix.SocketAcceptor if config["role"] == "acceptor" else fix.SocketInitiator
    engine = kind(app, store, settings, logs)
    engine.start()
    app.write({"event": "started"})
    try:
        for line in sys.stdin:
            if line.strip() and not command(app, line):
                break
    finally:
        engine.stop()
        app.write({"event": "stopped"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
