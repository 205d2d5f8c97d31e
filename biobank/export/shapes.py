"""The shapes an export's tables take: `wide`, one row per specimen with a column per phenotype
variable, or `long`, one row per specimen and variable (`export.long`)."""

from __future__ import annotations

from enum import StrEnum


class Shape(StrEnum):
    wide = "wide"
    long = "long"
