"""Readings checked against the wire's own bounds, field by field, before they are published.

The wire models refuse a snapshot with one impossible number (a NaN temperature, a negative
power limit, a petabyte of VRAM), so one odd reading from a driver would fail the whole
collection. Here each field is validated on its own with the wire model's definition of that
field (no second copy of the ranges): a value outside it becomes None, not measured, and a
problem line names where it came from and which field, so the rest of the node still shows.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from fleettui.textsafe import shown


@cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    info = model.model_fields[name]
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(annotation)


def bounded(model: type[BaseModel], name: str, value: Any, where: str, problems: list[str]) -> Any:
    """`value` as `model.name` accepts it, or None (with a problem line) when it does not."""
    if value is None:
        return None
    try:
        return _adapter(model, name).validate_python(value)
    except ValidationError as exc:
        why = exc.errors()[0]["msg"]
        problems.append(f"{where}: {name} {shown(value)} dropped, not a plausible reading ({why})")
        return None


def measured(
    model: type[BaseModel], where: str, problems: list[str], **values: Any
) -> dict[str, Any]:
    """`bounded` for several fields of one model: the keyword arguments to build it with."""
    return {name: bounded(model, name, v, where, problems) for name, v in values.items()}
