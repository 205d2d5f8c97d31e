"""Importing a REDCap project: its data dictionary and a "raw" records export (classic: one
row per record; longitudinal: one per record per event; plus a row per repeat instance), mapped
by a small TOML file (`mapping`), or by one inferred from the project itself (`inference`), onto
participants (found again by their REDCap record ID, an external ID), visits (`visits`),
phenotype values, consent and the PHI identity table.

Dictionary fields become phenotype variables (`dictionary`: the mapping can rename a field,
skip it or its form, and map its choices, `choices`; a field named like a variable already in
the dictionary, now or before an admin renamed it, is matched to it, its choice codes mapped by
label, unless it means something else, when it gets a variable under the project's namespace;
the values of a retired variable are left out with a notice, since the project usually keeps
the field an admin retired here); events become visits; the demographic fields the mapping
names become the participant; consent fields become signed consent documents, an answer turned
from yes to no a withdrawal (`consent_changes`); fields marked `Identifier? = y`, and those
whose validation, name or label says PHI (`biobank.domain.phi`), go only to the identity
table (and no fault shows their values: `faults`).

As with the legacy inventory import, checking (`checking`, `reading`, `people`) reads both
files whole and reports every fault (file, row, line, record, event, repeat instance, field,
value, reason) before anything is written, and works out what the import would add, change and
leave alone (`planning`), looking the database up a thousand rows at a time. Writing (`writing`)
then goes through the services each record belongs to, in the caller's one transaction, skipping
what is already there: importing the same files again changes nothing, and a changed value is
changed with its before and after in the audit trail. Re-importing is a sync: a value whose
cell is blank now, in a row that holds its form, is removed with its reason; a missing-data
code (`NASK`, `UNK`…) is stored as missing with reason, never as a value (`reading`). Any
fault stops the whole import, unless it skips the faulty: then every record with a faulty row
and every field with a faulty definition is left out, listed, and the rest written (`faults`).
"""

from biobank.services.imports.redcap.checking import check_redcap
from biobank.services.imports.redcap.mapping import ConsentMapping, RedcapMapping, redcap_mapping
from biobank.services.imports.redcap.planning import RedcapPlan
from biobank.services.imports.redcap.writing import write_redcap

__all__ = [
    "ConsentMapping",
    "RedcapMapping",
    "RedcapPlan",
    "check_redcap",
    "redcap_mapping",
    "write_redcap",
]
