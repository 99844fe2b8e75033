"""The Cog-style OpenAPI ``Input`` schema of a model, derived from its input fields."""

from __future__ import annotations

from typing import Any

from fluxserve.catalog.fields import InputField


def cog_input_schema(fields: tuple[InputField, ...]) -> dict[str, dict[str, Any]]:
    """Return ``{"Input": {...}, <enum schemas>}`` in the shape Cog generates.

    Enums are separate component schemas referenced through ``allOf`` as Cog publishes them;
    files are ``format: uri`` strings, and lists of files arrays of such strings. ``x-order`` is
    the position in ``fields``.
    """
    properties: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    for order, f in enumerate(fields):
        prop: dict[str, Any] = {"x-order": order, "description": f.description}
        if f.choices is not None:
            enum_type = "string" if all(isinstance(c, str) for c in f.choices) else "integer"
            enums[f.name] = {
                "enum": list(f.choices),
                "type": enum_type,
                "title": f.name,
                "description": "An enumeration.",
            }
            # No title on the property itself: Cog (and so every Replicate schema) titles only the component
            # it references, with the bare field name.
            prop["allOf"] = [{"$ref": f"#/components/schemas/{f.name}"}]
        else:
            prop["title"] = f.title
            if f.type == "uri":
                prop.update(type="string", format="uri")
            elif f.type == "uri_array":
                prop.update(type="array", items={"type": "string", "format": "uri"})
            elif f.type != "json":
                prop["type"] = f.type
        if f.has_default:
            prop["default"] = f.default
        if f.minimum is not None:
            prop["minimum"] = f.minimum
        if f.maximum is not None:
            prop["maximum"] = f.maximum
        properties[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "title": "Input", "properties": properties}
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return {"Input": schema, **enums}
