"""What the conformance suite's checks read: the test image and audio, the tool input schema it
inspects for JSON Schema 2020-12 keywords, and the elicitation schemas of SEP-1034 and SEP-1330."""

from __future__ import annotations

from typing import Any

__all__ = ["CONTACT_SCHEMA", "DEFAULTS_SCHEMA", "ENUMS_SCHEMA", "JSON_SCHEMA_2020_12", "PNG", "WAV"]

#: A 1x1 PNG and a minimal WAV file: the suite checks type and MIME type, not the pixels.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}
CONTACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}
DEFAULTS_SCHEMA: dict[str, Any] = {  # SEP-1034: a default for every primitive type
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verified", "default": True},
    },
}


def _titled(values: tuple[str, ...], titles: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"const": value, "title": title} for value, title in zip(values, titles, strict=True)]


_OPTIONS = ("option1", "option2", "option3")
ENUMS_SCHEMA: dict[str, Any] = {  # SEP-1330: the five enum shapes
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": list(_OPTIONS)},
        "titledSingle": {
            "type": "string",
            "oneOf": _titled(("value1", "value2", "value3"), ("First", "Second", "Third")),
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": list(_OPTIONS)}},
        "titledMulti": {
            "type": "array",
            "items": {"anyOf": _titled(("value1", "value2"), ("First Choice", "Second Choice"))},
        },
    },
}
