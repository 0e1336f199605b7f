"""Pieces of the tap's settings schema that the modules declaring settings share."""

from __future__ import annotations

from singer_sdk import typing as th


def choice(name: str, values: tuple[str, ...], description: str) -> th.Property:
    """A setting that takes one of `values`, the first by default."""
    return th.Property(
        name,
        th.StringType(allowed_values=list(values)),
        default=values[0],
        description=description,
    )
