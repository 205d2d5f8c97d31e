"""The code systems of the FHIR export and the reference tables that translate the inventory's
own codes into them (`biobank/reference/`, each naming its source): SPREC sample types to SNOMED
CT (MIABIS), dictionary units to UCUM, dictionary categories to Observation categories, SNOMED CT
diagnoses to ICD-10, and the lupus core's race and ethnicity to the US Core extensions."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

SNOMED_SYSTEM = "http://snomed.info/sct"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
UCUM_SYSTEM = "http://unitsofmeasure.org"
SPREC_SYSTEM = "https://doi.org/10.1089/bio.2017.0109"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-category"
VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


@cache
def _table(name: str) -> dict[str, Any]:
    table: dict[str, Any] = json.loads(
        files("biobank").joinpath(f"reference/{name}.json").read_text("utf-8")
    )
    return table


def specimen_type(sprec_type: str) -> dict[str, Any]:
    """Specimen.type: the SNOMED CT sample type the MIABIS mapping gives the SPREC type, named
    as MIABIS names it; a type without one is named by its SPREC code alone (text, no coding:
    SPREC is a code of pre-analytics, not a sample-type terminology)."""
    mapped = _table("sample_types")["types"].get(sprec_type)
    if mapped is None:
        return {"text": sprec_type}
    coding = {"system": SNOMED_SYSTEM, "code": mapped["snomed"], "display": mapped["display"]}
    return {"coding": [coding], "text": mapped["miabis"]}


def ucum(unit: str) -> str | None:
    """The UCUM code of a unit as the dictionary spells it, None if the table has none."""
    code: str | None = _table("ucum_units")["units"].get(unit.strip())
    return code


def observation_category(category: str | None) -> dict[str, Any] | None:
    """An Observation's category from its variable's: the FHIR category where the table maps
    it, the variable's own category as text either way."""
    if not category:
        return None
    code = _table("fhir_mappings")["observation_category"].get(category)
    if code is None:
        return {"text": category}
    return {"coding": [{"system": CATEGORY_SYSTEM, "code": code}], "text": category}


def icd10(snomed_code: str) -> dict[str, str] | None:
    """The ICD-10 coding of a SNOMED CT diagnosis, where the table maps it."""
    mapped = _table("fhir_mappings")["icd10"].get(snomed_code)
    if mapped is None:
        return None
    return {"system": ICD10_SYSTEM, "code": mapped[0], "display": mapped[1]}


def patient_extension(variable: str, code: object) -> dict[str, Any] | None:
    """The US Core Patient extension a participant's value is, or None: the variable has none,
    or its value has no code there (e.g. "more than one" race, which names no category)."""
    extension = _table("fhir_mappings")["patient_extensions"].get(variable)
    mapped = extension["codes"].get(code) if extension and isinstance(code, str) else None
    if mapped is None:
        return None
    system, value, display = mapped
    return {
        "url": extension["url"],
        "extension": [
            {"url": "ombCategory", "valueCoding": {"system": system, "code": value,
                                                   "display": display}},
            {"url": "text", "valueString": display},
        ],
    }  # fmt: skip
