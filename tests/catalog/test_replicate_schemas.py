"""The published ``Input`` and ``Output`` schemas against Replicate's own, field by field.

flux-schnell and flux-dev are compared with the ``all-the-public-replicate-models`` npm package (1.352.0, under
tests/js/node_modules: every public model's ``latest_version.openapi_schema``); flux-kontext-dev, which that
package predates, with facts copied by hand from its Cog source (named at ``KONTEXT_FIELDS``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from fluxserve.catalog.registry import BUILTIN_MODELS, FLUX_KONTEXT_DEV, ModelSpec

PACKAGE_DIR = Path(__file__).parent.parent / "js" / "node_modules" / "all-the-public-replicate-models"

#: A fact a property does not state (no default, no minimum, ...).
ABSENT = "<absent>"

#: The property keys a fact is read from; any other key on either side is reported.
_PROPERTY_FACTS = ("type", "format", "items", "title", "description", "default", "minimum", "maximum", "x-order")


#: Served models the package predates, checked against hand-copied facts instead (kontext here; FLUX.2 and Krea
#: in test_flux2_schemas.py).
BY_HAND = {FLUX_KONTEXT_DEV.ref, *(spec.ref for spec in BUILTIN_MODELS if "krea" in spec.name or "flux-2" in spec.name)}
#: Served models checked against the package.
PACKAGE_REFS = [spec.ref for spec in BUILTIN_MODELS if spec.ref not in BY_HAND]


@pytest.fixture(scope="module")
def replicate_models() -> dict[str, dict[str, Any]]:
    """The package's models by ``owner/name`` (models.json is ~60 MB: read once for the module, ~1 s)."""
    models_json = PACKAGE_DIR / "models.json"
    if not models_json.is_file():
        if os.environ.get("CI"):
            pytest.fail("tests/js/node_modules is required in CI (scripts/test runs npm ci)")
        pytest.skip("all-the-public-replicate-models is not installed (run: npm ci --prefix tests/js)")
    with models_json.open(encoding="utf-8") as f:
        models: list[dict[str, Any]] = json.load(f)
    return {f"{m['owner']}/{m['name']}": m for m in models}


def _show(value: Any) -> str:
    return value if value is ABSENT else json.dumps(value, sort_keys=True)


def _same(ours: Any, theirs: Any, *, exact: bool) -> bool:
    """Equal as JSON: with ``exact``, also in how it is written (3 is not 3.0); a bool never equals a number."""
    if exact or ours is ABSENT or theirs is ABSENT:
        return _show(ours) == _show(theirs)
    return bool(ours == theirs and isinstance(ours, bool) == isinstance(theirs, bool))


def property_facts(prop: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A property's facts, with Cog's ``allOf: [{$ref}]`` enum component resolved into ``enum.*`` facts."""
    facts = {key: prop.get(key, ABSENT) for key in _PROPERTY_FACTS}
    refs = [part["$ref"] for part in prop.get("allOf", []) if "$ref" in part]
    if refs:
        component = components.get(refs[0].rsplit("/", 1)[-1], {})
        facts["enum"] = component.get("enum", ABSENT)
        facts["enum.type"] = component.get("type", ABSENT)
        facts["enum.title"] = component.get("title", ABSENT)
        facts["enum.description"] = component.get("description", ABSENT)
        facts["allOf"] = len(prop["allOf"])
    else:
        facts["enum"] = prop.get("enum", ABSENT)
    facts["other keys"] = sorted(set(prop) - {*_PROPERTY_FACTS, "allOf", "enum"}) or ABSENT
    return facts


def input_differences(
    where: str,
    ours: dict[str, Any],
    theirs: dict[str, Any],
    components: tuple[dict[str, Any], dict[str, Any]],
    *,
    exact: bool = True,
) -> list[str]:
    """Every difference between two ``Input`` schemas, one readable line each (empty when they match)."""
    lines: list[str] = []
    for key in ("type", "title", "required"):
        if not _same(ours.get(key, ABSENT), theirs.get(key, ABSENT), exact=True):
            lines.append(
                f"{where}.{key}: ours {_show(ours.get(key, ABSENT))}, Replicate's {_show(theirs.get(key, ABSENT))}"
            )
    our_props, their_props = ours["properties"], theirs["properties"]
    for name in sorted(set(their_props) - set(our_props)):
        lines.append(f"{where}.properties.{name}: missing here")
    for name in sorted(set(our_props) - set(their_props)):
        lines.append(f"{where}.properties.{name}: not in Replicate's schema")
    for name in sorted(set(our_props) & set(their_props), key=lambda n: their_props[n].get("x-order", 0)):
        our_facts = property_facts(our_props[name], components[0])
        their_facts = property_facts(their_props[name], components[1])
        for fact in [*their_facts, *(fact for fact in our_facts if fact not in their_facts)]:
            a, b = our_facts.get(fact, ABSENT), their_facts.get(fact, ABSENT)
            if not _same(a, b, exact=exact):
                lines.append(f"{where}.properties.{name}.{fact}: ours {_show(a)}, Replicate's {_show(b)}")
    return lines


def _fail_on(lines: list[str]) -> None:
    if lines:
        pytest.fail("schema differs from Replicate's:\n" + "\n".join(lines), pytrace=False)


def _schemas(spec: ModelSpec) -> dict[str, Any]:
    schemas: dict[str, Any] = spec.openapi_schema["components"]["schemas"]
    return schemas


def test_every_served_model_has_a_reference(replicate_models: dict[str, dict[str, Any]]) -> None:
    """Each served model is compared with the package, or (only while the package lacks it) with hand facts."""
    for spec in BUILTIN_MODELS:
        if spec.ref in BY_HAND:
            assert spec.ref not in replicate_models, f"{spec.ref} is in the package now: compare with it instead"
        else:
            assert spec.ref in replicate_models, f"{spec.ref} is not in all-the-public-replicate-models"


#: Inputs we add on purpose beyond the published version: flux-dev-lora's second LoRA (cog-flux's dev-lora takes it).
OWN_INPUTS = {"black-forest-labs/flux-dev-lora": {"extra_lora", "extra_lora_scale"}}


@pytest.mark.parametrize("ref", PACKAGE_REFS)
def test_input_and_output_match_replicates(replicate_models: dict[str, dict[str, Any]], ref: str) -> None:
    """Input (names, types, defaults, enums in order, ranges, required, x-order, titles, descriptions) and Output."""
    spec = next(spec for spec in BUILTIN_MODELS if spec.ref == ref)
    latest = replicate_models[ref]["latest_version"]
    # The registry answers to Replicate's version ids as aliases: a newer package means a newer schema to match.
    assert latest["id"] in spec.replicate_versions, f"{ref}: Replicate's latest version {latest['id']} is no alias"
    theirs = latest["openapi_schema"]["components"]["schemas"]
    ours = _schemas(spec)
    published = dict(ours["Input"])
    own = OWN_INPUTS.get(ref, set())
    published["properties"] = {k: v for k, v in published["properties"].items() if k not in own}
    if own:  # our extensions come after every published field, so none of theirs changes x-order
        last = max(p["x-order"] for p in published["properties"].values())
        assert all(ours["Input"]["properties"][name]["x-order"] > last for name in own)
    lines = input_differences(f"{ref} Input", published, theirs["Input"], (ours, theirs))
    _fail_on(lines)
    assert _show(ours["Output"]) == _show(theirs["Output"]), (
        f"{ref} Output: ours {_show(ours['Output'])}, Replicate's {_show(theirs['Output'])}"
    )


# flux-kontext-dev as Replicate publishes it, from github.com/replicate/cog-flux-kontext predict.py at commit b9063c1
# (2025-07-23), the source cog-safe-push pushes as black-forest-labs/flux-kontext-dev: one entry per predict()
# parameter in order (Cog's x-order), with Cog's titles (none on an enum property). The first published version
# (replicate.com/black-forest-labs/flux-kontext-dev/versions/a1408d2c…/api) lists the same fields in the same
# order without go_fast, and num_inference_steps defaulting to 30; 28 since the commit that added go_fast.
# Whether a bound is written 0 or 0.0 there is not confirmed, so values compare as numbers, not as text.
KONTEXT_FIELDS: dict[str, dict[str, Any]] = {
    "prompt": {
        "type": "string",
        "title": "Prompt",
        "description": "Text description of what you want to generate, "
        "or the instruction on how to edit the given image.",
    },
    "input_image": {
        "type": "string",
        "format": "uri",
        "title": "Input Image",
        "description": "Image to use as reference. Must be jpeg, png, gif, or webp.",
    },
    "aspect_ratio": {
        "allOf": [{"$ref": "#/components/schemas/aspect_ratio"}],
        "default": "match_input_image",
        "description": "Aspect ratio of the generated image. "
        "Use 'match_input_image' to match the aspect ratio of the input image.",
    },
    "num_inference_steps": {
        "type": "integer",
        "title": "Num Inference Steps",
        "default": 28,
        "minimum": 4,
        "maximum": 50,
        "description": "Number of inference steps",
    },
    "guidance": {
        "type": "number",
        "title": "Guidance",
        "default": 2.5,
        "minimum": 0,
        "maximum": 10,
        "description": "Guidance scale for generation",
    },
    "seed": {
        "type": "integer",
        "title": "Seed",
        "description": "Random seed for reproducible generation. Leave blank for random.",
    },
    "output_format": {
        "allOf": [{"$ref": "#/components/schemas/output_format"}],
        "default": "webp",
        "description": "Output image format",
    },
    "output_quality": {
        "type": "integer",
        "title": "Output Quality",
        "default": 80,
        "minimum": 0,
        "maximum": 100,
        "description": "Quality when saving the output images, from 0 to 100. 100 is best quality, 0 is lowest "
        "quality. Not relevant for .png outputs",
    },
    "disable_safety_checker": {
        "type": "boolean",
        "title": "Disable Safety Checker",
        "default": False,
        "description": "Disable NSFW safety checker",
    },
    "go_fast": {
        "type": "boolean",
        "title": "Go Fast",
        "default": True,
        "description": "Make the model go fast, output quality may be slightly degraded for more difficult prompts",
    },
}
# cog-flux-kontext flux/util.py ASPECT_RATIOS (keys in order) and predict.py's output_format choices.
KONTEXT_ENUMS: dict[str, list[str]] = {
    "aspect_ratio": [
        "1:1",
        "16:9",
        "21:9",
        "3:2",
        "2:3",
        "4:5",
        "5:4",
        "3:4",
        "4:3",
        "9:16",
        "9:21",
        "match_input_image",
    ],
    "output_format": ["webp", "jpg", "png"],
}
# input_image is a Path without a default, so Cog requires it; the version page shows Output as one URI.
KONTEXT_REQUIRED = ["prompt", "input_image"]
KONTEXT_OUTPUT = {"type": "string", "format": "uri", "title": "Output"}
# Where fluxserve departs from Replicate on purpose: input_images (several reference images) is its own input, and
# so input_image cannot be required (kontext_input_errors asks for exactly one of the two).
KONTEXT_OWN_INPUTS = {"input_images"}
KONTEXT_OPTIONAL_HERE = {"input_image"}


def _kontext_reference() -> dict[str, Any]:
    """KONTEXT_FIELDS and friends as the components of a Cog OpenAPI document."""
    properties = {name: {**facts, "x-order": order} for order, (name, facts) in enumerate(KONTEXT_FIELDS.items())}
    enums = {
        name: {"enum": choices, "type": "string", "title": name, "description": "An enumeration."}
        for name, choices in KONTEXT_ENUMS.items()
    }
    inputs = {"type": "object", "title": "Input", "required": KONTEXT_REQUIRED, "properties": properties}
    return {"Input": inputs, "Output": KONTEXT_OUTPUT, **enums}


def test_flux_kontext_dev_matches_replicates_facts() -> None:
    """flux-kontext-dev's Input and Output against the hand-copied facts, except where we depart on purpose."""
    ours, theirs = _schemas(FLUX_KONTEXT_DEV), _kontext_reference()
    published = dict(ours["Input"])
    own = {name: published["properties"][name] for name in KONTEXT_OWN_INPUTS}
    published["properties"] = {k: v for k, v in published["properties"].items() if k not in KONTEXT_OWN_INPUTS}
    expected = dict(theirs["Input"])
    expected["required"] = [name for name in KONTEXT_REQUIRED if name not in KONTEXT_OPTIONAL_HERE]
    lines = input_differences("flux-kontext-dev Input", published, expected, (ours, theirs), exact=False)
    _fail_on(lines)
    last = max(facts["x-order"] for facts in expected["properties"].values())
    assert all(prop["x-order"] > last for prop in own.values()), "our own inputs must follow Replicate's in x-order"
    assert ours["Output"] == KONTEXT_OUTPUT


def test_differences_are_reported_field_by_field() -> None:
    """The comparison itself: an enum title, a reordered enum and a float-for-int default are each one line."""
    theirs: dict[str, Any] = {
        "Input": {
            "type": "object",
            "title": "Input",
            "required": ["prompt"],
            "properties": {
                "prompt": {"type": "string", "title": "Prompt", "x-order": 0},
                "size": {"allOf": [{"$ref": "#/components/schemas/size"}], "default": "a", "x-order": 1},
                "steps": {"type": "integer", "title": "Steps", "default": 4, "x-order": 2},
            },
        },
        "size": {"enum": ["a", "b"], "type": "string", "title": "size", "description": "An enumeration."},
    }
    ours = json.loads(json.dumps(theirs))
    ours["Input"]["properties"]["size"]["title"] = "Size"
    ours["size"]["enum"] = ["b", "a"]
    ours["Input"]["properties"]["steps"]["default"] = 4.0
    del ours["Input"]["required"]
    lines = input_differences("m Input", ours["Input"], theirs["Input"], (ours, theirs))
    assert sorted(lines) == [
        'm Input.properties.size.enum: ours ["b", "a"], Replicate\'s ["a", "b"]',
        'm Input.properties.size.title: ours "Size", Replicate\'s <absent>',
        "m Input.properties.steps.default: ours 4.0, Replicate's 4",
        'm Input.required: ours <absent>, Replicate\'s ["prompt"]',
    ]
    assert input_differences("m Input", ours["Input"], theirs["Input"], (ours, theirs), exact=False) == [
        'm Input.required: ours <absent>, Replicate\'s ["prompt"]',
        'm Input.properties.size.title: ours "Size", Replicate\'s <absent>',
        'm Input.properties.size.enum: ours ["b", "a"], Replicate\'s ["a", "b"]',
    ]
