"""STAC validation offline: the core schemas pystac ships, the extension schemas held here.

``tests/data/stac-schemas/{extension}/{version}/schema.json`` are the published JSON schemas of
the extensions gmrun declares (copied from the stac-extensions GitHub repositories at their
release tags; Apache-2.0). A schema that is neither there nor in pystac is an error, not a
download: the tests never touch the network, and an item declaring an extension we do not hold
fails loudly.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pystac.validation import validate_dict
from pystac.validation.stac_validator import GetSchemaError, JsonSchemaSTACValidator

SCHEMAS = Path(__file__).parent / "data" / "stac-schemas"


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's JSON-schema validator with every schema from disk and none from the network."""

    def __init__(self) -> None:
        super().__init__()
        for path in sorted(SCHEMAS.glob("*/*/schema.json")):
            doc = json.loads(path.read_text())
            self.schema_cache[doc["$id"].rstrip("#")] = doc

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        key = schema_uri.rstrip("#")
        if key not in self.schema_cache:
            raise GetSchemaError(schema_uri, LookupError(f"schema not held in {SCHEMAS}"))
        return self.schema_cache[key]


@cache
def _validator() -> OfflineValidator:
    return OfflineValidator()


def validate(doc: dict[str, Any], href: str | None = None) -> list[str]:
    """Validate a STAC Item or Collection against the core schema and each of its declared
    extensions; returns the schema URIs it was checked against (raises on the first failure)."""
    return validate_dict(doc, href=href, validator=_validator())


def declared_extensions() -> set[str]:
    """The extension schema URIs held here."""
    return {json.loads(p.read_text())["$id"].rstrip("#") for p in SCHEMAS.glob("*/*/schema.json")}
