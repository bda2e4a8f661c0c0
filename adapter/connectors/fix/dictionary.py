"""FIX data dictionaries in QuickFIX's XML format, and the checks they allow on a message.

A dictionary names every field (number, type, allowed values) and every message type
(its required and permitted fields, through components and repeating groups). The
session checks each application message against it, both ways: an outbound message
that fails is never sent (its outbox row says why), an inbound one is answered with a
session-level Reject(3) carrying the SessionRejectReason(373) below.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from adapter.connectors.fix.codec import HEADER_TAGS
from protocol.errors import ValidationError

# SessionRejectReason(373) values.
INVALID_TAG, REQUIRED_TAG_MISSING, TAG_NOT_DEFINED_FOR_TYPE = 0, 1, 2
VALUE_INCORRECT, INCORRECT_DATA_FORMAT, INVALID_MSG_TYPE = 5, 6, 11

_INT_TYPES = frozenset({"INT", "LENGTH", "NUMINGROUP", "SEQNUM", "TAGNUM", "DAYOFMONTH"})
_FLOAT_TYPES = frozenset({"FLOAT", "QTY", "PRICE", "PRICEOFFSET", "AMT", "PERCENTAGE"})
_MULTI_TYPES = frozenset({"MULTIPLEVALUESTRING", "MULTIPLECHARVALUE", "MULTIPLESTRINGVALUE"})
_INT = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)$")


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a message fails the dictionary: a SessionRejectReason, the tag, and words."""

    reason: int
    text: str
    tag: int | None = None


@dataclass(frozen=True, slots=True)
class FieldDef:
    number: int
    name: str
    type: str
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class MessageDef:
    name: str
    required: frozenset[int]
    allowed: frozenset[int]


class DataDictionary:
    """One parsed dictionary; immutable, so one instance may serve many sessions."""

    def __init__(
        self, version: str, fields: dict[int, FieldDef], messages: dict[str, MessageDef]
    ) -> None:
        self.version = version
        self._fields = fields
        self._messages = messages

    @classmethod
    def parse(cls, content: bytes, name: str = "data dictionary") -> DataDictionary:
        """Parse QuickFIX XML; ValidationError (naming `name`) when it is not one."""
        try:
            root = ET.fromstring(content)
        except ET.ParseError as exc:
            raise ValidationError(f"{name} is not XML: {exc}") from None
        if root.tag != "fix" or root.find("fields") is None or root.find("messages") is None:
            raise ValidationError(
                f"{name} is not a QuickFIX data dictionary (<fix> with <fields> and <messages>)"
            )
        try:
            return _Parser(root).build()
        except (KeyError, ValueError) as exc:
            raise ValidationError(f"{name} is inconsistent: {exc}") from None

    def knows(self, msg_type: str) -> bool:
        return msg_type in self._messages

    def check(self, msg_type: str, body: Sequence[tuple[int, str]]) -> Problem | None:
        """The first problem of an application message's body, or None when it is valid."""
        message = self._messages.get(msg_type)
        if message is None:
            return Problem(INVALID_MSG_TYPE, f"MsgType {msg_type!r} is not in the dictionary")
        present = set()
        for tag, value in body:
            present.add(tag)
            problem = self._check_field(message, tag, value)
            if problem is not None:
                return problem
        for tag in sorted(message.required - present):
            name = self._fields[tag].name if tag in self._fields else str(tag)
            return Problem(REQUIRED_TAG_MISSING, f"required tag {tag} ({name}) missing", tag)
        return None

    def _check_field(self, message: MessageDef, tag: int, value: str) -> Problem | None:
        field = self._fields.get(tag)
        if field is None:
            return Problem(INVALID_TAG, f"tag {tag} is not in the dictionary", tag)
        if tag not in message.allowed and tag not in HEADER_TAGS:
            return Problem(
                TAG_NOT_DEFINED_FOR_TYPE, f"tag {tag} ({field.name}) is not in {message.name}", tag
            )
        if field.type in _INT_TYPES and not _INT.match(value):
            return Problem(
                INCORRECT_DATA_FORMAT, f"tag {tag} ({field.name}) is not an integer", tag
            )
        if field.type in _FLOAT_TYPES and not _FLOAT.match(value):
            return Problem(INCORRECT_DATA_FORMAT, f"tag {tag} ({field.name}) is not a number", tag)
        if field.values:
            tokens = value.split(" ") if field.type in _MULTI_TYPES else [value]
            bad = [t for t in tokens if t not in field.values]
            if bad:
                return Problem(
                    VALUE_INCORRECT, f"tag {tag} ({field.name}) has no value {bad[0]!r}", tag
                )
        return None


class _Parser:
    """Flattens components and groups of one XML tree into per-message tag sets."""

    def __init__(self, root: ET.Element) -> None:
        self._root = root
        self._numbers: dict[str, int] = {}
        self._components = {c.attrib["name"]: c for c in root.iterfind("components/component")}

    def build(self) -> DataDictionary:
        fields: dict[int, FieldDef] = {}
        for node in self._root.iterfind("fields/field"):
            number = int(node.attrib["number"])
            values = frozenset(v.attrib["enum"] for v in node.iterfind("value"))
            fields[number] = FieldDef(number, node.attrib["name"], node.attrib["type"], values)
            self._numbers[node.attrib["name"]] = number
        envelope: set[int] = set()
        for section in ("header", "trailer"):
            part = self._root.find(section)
            if part is not None:
                envelope |= self._tags(part, required_only=False)
        messages = {}
        for node in self._root.iterfind("messages/message"):
            allowed = frozenset(self._tags(node, required_only=False) | envelope)
            required = frozenset(self._tags(node, required_only=True))
            messages[node.attrib["msgtype"]] = MessageDef(node.attrib["name"], required, allowed)
        root = self._root.attrib
        version = f"{root.get('type', 'FIX')}.{root.get('major', '?')}.{root.get('minor', '?')}"
        if root.get("servicepack", "0") not in ("", "0"):
            version += f"SP{root['servicepack']}"
        return DataDictionary(version, fields, messages)

    def _tags(self, node: ET.Element, *, required_only: bool, depth: int = 0) -> set[int]:
        """Tags under `node`: all of them, or those a message must carry at its top level."""
        if depth > 50:
            raise ValueError("components nest deeper than 50 levels (a cycle?)")
        tags: set[int] = set()
        for child in node:
            required = child.attrib.get("required", "N") == "Y"
            if required_only and not required:
                continue
            name = child.attrib.get("name", "")
            if child.tag == "field":
                tags.add(self._numbers[name])
            elif child.tag == "group":
                tags.add(self._numbers[name])
                if not required_only:  # members are checked only when a group is present
                    tags |= self._tags(child, required_only=False, depth=depth + 1)
            elif child.tag == "component":
                tags |= self._tags(
                    self._components[name], required_only=required_only, depth=depth + 1
                )
        return tags
