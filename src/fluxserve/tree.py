"""Walking a prediction's output: any JSON shape (a value, lists, objects) whose leaves may be files.

One definition of the walk, used for storing files, rendering blob references as URLs, counting images
and re-hosting a forwarded prediction's outputs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any


def leaves(value: Any) -> Iterator[Any]:
    """Every leaf of ``value`` (lists, tuples and dict values are walked)."""
    if isinstance(value, list | tuple):
        for item in value:
            yield from leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    else:
        yield value


def map_leaves(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with every leaf replaced by ``fn(leaf)``; tuples become lists (as JSON would have them)."""
    if isinstance(value, list | tuple):
        return [map_leaves(item, fn) for item in value]
    if isinstance(value, dict):
        return {key: map_leaves(item, fn) for key, item in value.items()}
    return fn(value)


async def amap_leaves(value: Any, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """:func:`map_leaves` with an async ``fn`` (leaves are done one after another, in order)."""
    if isinstance(value, list | tuple):
        return [await amap_leaves(item, fn) for item in value]
    if isinstance(value, dict):
        return {key: await amap_leaves(item, fn) for key, item in value.items()}
    return await fn(value)
