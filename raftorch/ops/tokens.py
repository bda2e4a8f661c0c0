"""`raftorch tokens create|list|revoke`: API tokens through the admin API of any replica.

The secret of a new token is printed once (on its own line, or as ``token`` with
``--json``) and never again: only its SHA-256 is stored. `revoke` takes a name or an
id; every replica refuses the token within a second.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from raftorch.ops.client import Client, OpsError
from raftorch.ops.commands import _bind, _common, emit, table

TOKENS = "/api/v1/tokens"
ROLES = ("viewer", "operator", "admin")


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    made = client.post_json(TOKENS, {"name": args.name, "role": args.role})
    if args.json:
        emit(args, made, "")
        return 0
    sys.stderr.write(
        f"created token {made['name']} (role {made['role']}, id {made['id']}); "
        "it is shown only now: store it in your secret manager\n"
    )
    sys.stdout.write(made["token"] + "\n")
    return 0


def token_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = ("NAME", "ROLE", "ID", "CREATED", "LAST_USED", "REVOKED")
    rows = [
        [t["name"], t["role"], t["id"], t["created_at"], t["last_used_at"], t["revoked_at"]]
        for t in items
    ]
    return table(headers, rows)


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    items = client.get_json(TOKENS)["items"]
    emit(args, {"items": items}, token_table(items) if items else "no stored tokens")
    return 0


def resolve(items: Sequence[Mapping[str, Any]], wanted: str) -> Mapping[str, Any]:
    """The live token named or numbered `wanted` (names stay taken after revocation)."""
    matches = [t for t in items if wanted in (t["id"], t["name"])]
    live = [t for t in matches if t["revoked_at"] is None]
    if live:
        return live[0]
    if matches:
        raise OpsError(f"token {wanted} is already revoked")
    raise OpsError(f"no such token: {wanted}")


def cmd_revoke(client: Client, args: argparse.Namespace) -> int:
    token = resolve(client.get_json(TOKENS)["items"], args.token_ref)
    client.delete(f"{TOKENS}/{urllib.parse.quote(token['id'], safe='')}")
    done = {"id": token["id"], "name": token["name"], "revoked": True}
    emit(args, done, f"revoked {token['name']} ({token['id']})")
    return 0


def add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tokens create|list|revoke` to the `raftorch` subcommands."""
    common = _common()
    tokens = commands.add_parser("tokens", help="create, list and revoke API tokens (admin)")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[common], help="a new token, shown once")
    create.add_argument("--name", required=True, help="who or what uses it")
    create.add_argument("--role", required=True, choices=ROLES)
    _bind(create, cmd_create)
    listing = actions.add_parser("list", parents=[common], help="list tokens (no secrets)")
    _bind(listing, cmd_list)
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a token everywhere")
    revoke.add_argument("token_ref", metavar="NAME_OR_ID")
    _bind(revoke, cmd_revoke)
