from typing import Any

class CONNECTION_STATE:
    DISCONNECTED: int
    CONNECTING: int
    CONNECTED: int

class TcpConnection:
    state: int
    def disconnect(self) -> None: ...
    def _TcpConnection__processParseMessage(self) -> Any: ...
    def _TcpConnection__processRead(self) -> bool: ...
    def __getattr__(self, name: str) -> Any: ...  # pysyncobj's name-mangled internals
