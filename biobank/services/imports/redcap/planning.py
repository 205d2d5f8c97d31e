"""What checking a REDCap project builds and writing follows: the plan, and its parts (the
variables fields become, the participants, visits, facts and consent signatures the records
give, each with what is stored already; the participants and visits kept in a scratch file,
those of a batch of rows at a time in memory)."""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import IO, Any, Generic, NamedTuple, TypeVar

from biobank import redcap
from biobank.domain.phenotypes import Spec, Stored, display
from biobank.domain.vocabulary import PhenotypeScope, Sex
from biobank.models import ParticipantIdentity, PhenotypeVariable, Study
from biobank.services import phenotype_variables
from biobank.services.imports.common import BATCH_ROWS, Counts, ImportReport, Removed, ScratchFile
from biobank.services.imports.redcap.faults import Place
from biobank.services.imports.redcap.mapping import IDENTITY_LIMITS, RedcapMapping


@dataclass(frozen=True)
class Missing:
    """A value missing with reason: the missing-data code a cell holds (`mapping`)."""

    code: str


Given = Stored | Missing  # what a cell gives a value's place, or what the place holds
# participant, visit, variable, what the file gives (None: a cell blank now), what is stored,
# the instance (0: the visit's own value) and a repeat instance's observation date
NewValue = tuple[str, str | None, str, Given | None, Given | None, int, date | None]
# (what, outcome) → how many: ("values", "added"); a defaultdict, which pickles in C (a
# Counter's own way runs Python for each participant the scratch file keeps)
Outcomes = defaultdict[tuple[str, str], int]
K = TypeVar("K", str, tuple[str, str])
V = TypeVar("V")


@dataclass
class Target:
    """A field that is a phenotype variable: found (`variable`), or made from `definition`;
    `codes` turns REDCap's choice codes into the variable's."""

    field: redcap.Field
    definition: phenotype_variables.VariableRead
    variable: PhenotypeVariable | None
    codes: dict[str, str]

    @cached_property
    def spec(self) -> Spec:
        """Worked out once: every cell of the field is read against it."""
        return Spec.of(self.variable or self.definition)

    @property
    def participant_level(self) -> bool:
        return (self.variable or self.definition).scope is PhenotypeScope.participant


class Fact(NamedTuple):
    """One thing the file says of a participant, and where it first says it. A tuple: a
    participant kept in the scratch file holds several, pickled and read back by batch, and a
    tuple's fields cost a fraction of a dataclass's to pickle."""

    row: int
    line: int
    column: str
    raw: str
    value: Any


@dataclass
class Signature:
    """A consent signature the records give (a version of the form, the day, the answers)."""

    row: int
    line: int
    version: str
    signed_on: date
    answers: dict[str, bool]  # statement → answer
    columns: dict[str, str]  # statement → field
    stored: dict[str, bool] | None = None  # the same signature, already recorded
    # statement → the day it is withdrawn: an answer turned from yes to no (`people`)
    withdrawn: dict[str, date] = field(default_factory=dict)


@dataclass
class Person:
    """A participant the records name: as stored, and all the file says of it."""

    row: int  # its first row
    id: int | None = None  # None: to be created
    study_id: int | None = None
    sex: Sex | None = None  # as stored
    birth_year: int | None = None
    facts: dict[str, Fact] = field(default_factory=dict)  # "sex", "mrn", "other:f", "value:v"
    signatures: dict[tuple[str, date], Signature] = field(default_factory=dict)
    identity: ParticipantIdentity | None = None
    outcome: str = "unchanged"
    new_values: list[tuple[str, Given | None]] = field(default_factory=list)  # (variable, stored)
    blank: set[str] = field(default_factory=set)  # participant-level: a row holding it blank
    removed: list[Removed] = field(default_factory=list)  # what its blank cells remove
    outcomes: Outcomes = field(default_factory=lambda: defaultdict(int))  # once it is kept
    first_date: date | None = None  # of its first dated visit

    def __getstate__(self) -> dict[str, Any]:
        """Kept (`Kept`) without its stored identity, a database row: writing finds it again."""
        return self.__dict__ | {"identity": None}


@dataclass
class PlannedVisit:
    """A visit the records name (one per record and event; `at`: its row), and its stored
    date."""

    at: Place
    visit_date: date | None  # as the file gives it
    id: int | None = None
    stored_date: date | None = None
    forms: tuple[str, ...] = ()  # what its rows hold (`Row.holding`)

    def __reduce__(self) -> tuple[type[PlannedVisit], tuple[Any, ...]]:
        """Pickled as a tuple of its fields (a dataclass's own way pickles its names too): the
        scratch file keeps one for each row, read and written back by batch."""
        return PlannedVisit, (self.at, self.visit_date, self.id, self.stored_date, self.forms)


@dataclass
class Row:
    """One row of the records as read: what it says, and the faults of its cells."""

    row: int
    line: int
    code: str | None = None
    event: str = ""
    label: str | None = None  # its visit (see `visits`)
    base: str | None = None  # its event's visit (the classic project's one)
    form: str | None = None  # a repeating instrument's row: the form it holds
    instance: int = 0  # its values' (`visits`): 0, or a dated observation's
    visit_date: date | None = None  # a dated observation's row: the observation's date
    facts: dict[str, Fact] = field(default_factory=dict)
    values: dict[str, tuple[Given, str]] = field(default_factory=dict)  # visit-scope
    blank: list[str] = field(default_factory=list)  # fields of forms it holds, left blank
    signature: Signature | None = None
    faults: list[tuple[str | None, str | None, str]] = field(default_factory=list)

    @property
    def holding(self) -> str:
        """What of its visit the row holds: "" its event's forms, else its repeating form (and
        instance, a dated observation's); two rows of a visit never hold the same."""
        return f"{self.form} #{self.instance}" if self.instance else self.form or ""


class Kept(Generic[K, V]):
    """The participants (by record) or visits (by record and event's label) the records name,
    kept in the check's scratch file: those in use (`load`, `get`, set) held in memory, and
    written back with what was changed of them by `release` (a batch of rows at a time); each
    with its record (`record`), and in the order first kept."""

    def __init__(self, scratch: ScratchFile, table: str, record: Callable[[K], str]):
        self.scratch = scratch
        self.table = table
        self.record: Callable[[K], str] = record
        scratch.file.executescript(
            f"CREATE TABLE {table} (key TEXT PRIMARY KEY, record TEXT, data BLOB);"
            f"CREATE INDEX {table}_record ON {table} (record)"
        )
        self.held: dict[K, V] = {}
        self.absent: set[K] = set()  # looked for, not kept

    def load(self, keys: Iterable[K]) -> None:
        """Hold those of `keys` kept, in one look-up a batch (a key repeats: a record's every
        value names it; each is encoded once)."""
        held, absent = self.held, self.absent
        fresh = [k for k in dict.fromkeys(keys) if k not in held and k not in absent]
        wanted = {json.dumps(k): k for k in fresh}
        query = f"SELECT key, data FROM {self.table} WHERE key IN ({{marks}})"
        for key, data in self.scratch.where_in(query, wanted):
            self.held[wanted.pop(key)] = pickle.loads(data)
        self.absent.update(wanted.values())

    def get(self, key: K) -> V | None:
        if key not in self.held and key not in self.absent:
            self.load([key])
        return self.held.get(key)

    def __getitem__(self, key: K) -> V:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: K, value: V) -> None:
        self.held[key] = value
        self.absent.discard(key)

    def release(self) -> None:
        """Write what is held back, and let go of it."""
        self.scratch.file.executemany(
            f"INSERT INTO {self.table} VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET data = excluded.data",
            [
                (json.dumps(k), self.record(k), pickle.dumps(v, pickle.HIGHEST_PROTOCOL))
                for k, v in self.held.items()
            ],
        )
        self.held, self.absent = {}, set()

    def of_records(self, records: Iterable[str]) -> Iterator[tuple[K, V]]:
        """Those of `records`, each record's in the order first kept (what is held is
        released first; these are not held)."""
        self.release()
        query = f"SELECT key, data FROM {self.table} WHERE record IN ({{marks}}) ORDER BY rowid"
        for key, data in self.scratch.where_in(query, records):
            yield self.key(key), pickle.loads(data)

    def chunks(self, *, changing: bool = True) -> Iterator[list[tuple[K, V]]]:
        """All of them in the order first kept, a batch at a time, each batch held until the
        next: what is changed of it kept (not when they are only read: not `changing`)."""
        self.release()
        query = f"SELECT rowid, key, data FROM {self.table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
        after = 0
        while found := self.scratch.file.execute(query, (after, BATCH_ROWS)).fetchall():
            after = found[-1][0]
            self.held = {self.key(key): pickle.loads(data) for _, key, data in found}
            yield list(self.held.items())
            if not changing:
                self.held, self.absent = {}, set()
            self.release()

    def key(self, written: str) -> Any:
        """A key as the scratch file holds it (JSON): a visit's a pair."""
        key = json.loads(written)
        return tuple(key) if isinstance(key, list) else key


@dataclass(frozen=True)
class Tally:
    """The report's counts of what the import adds, changes and leaves alone, held here too:
    the report's are optional (a legacy sheet's report has none), these are always there."""

    participants: Counts = field(default_factory=Counts)
    identities: Counts = field(default_factory=Counts)
    visits: Counts = field(default_factory=Counts)
    variables: Counts = field(default_factory=Counts)
    values: Counts = field(default_factory=Counts)
    consents: Counts = field(default_factory=Counts)

    def add(self, outcomes: Outcomes) -> None:
        for (what, outcome), times in outcomes.items():
            counts: Counts = getattr(self, what)
            counts.count(outcome, times)


@dataclass
class RedcapPlan:
    """What checking found: the report, and what writing needs."""

    report: ImportReport
    study: Study
    mapping: RedcapMapping
    targets: dict[str, Target]
    people: Kept[str, Person]
    visits: Kept[tuple[str, str], PlannedVisit]
    documents: dict[str, tuple[date, list[str]]]  # new version → effective date, statements
    spool: IO[bytes]  # batches of (rows, participants, visits, [NewValue]), pickled
    checked: bool  # the records were checked (not when the dictionary or header stops them)
    skip_faulty: bool  # write all but the faulty records and fields
    left_out: frozenset[str]  # the participants of faulty records
    record_id_phi: bool = False  # the record ID identifies the person: its external ID is PHI

    @property
    def writable(self) -> bool:
        """Nothing is faulty, or what is faulty is left out."""
        return not self.report.fault_count or (self.skip_faulty and self.checked)


def outcome_of(before: object, after: object) -> str:
    """What importing `after` over what is stored (`before`; None: nothing) does."""
    return "added" if before is None else "unchanged" if before == after else "changed"


def removal(at: Place, target: Target, before: Given, phi_record: bool) -> Removed:
    """The report's entry of a value a blank cell at `at` removes (no record ID that is PHI)."""
    shown = before.code if isinstance(before, Missing) else display(target.spec, before)
    return Removed(
        row=at.row,
        record=None if phi_record else at.record,
        event=at.event,
        instance=at.instance,
        field=target.field.name,
        value=shown,
    )


def identity_of(facts: dict[str, Fact]) -> dict[str, Any]:
    """The identity columns and `other` entries the file gives."""
    wanted: dict[str, Any] = {c: facts[c].value for c in IDENTITY_LIMITS if c in facts}
    other = {k[6:]: f.value for k, f in facts.items() if k.startswith("other:")}
    if other:
        wanted["other"] = other
    return wanted


def identity_changes(identity: ParticipantIdentity, wanted: dict[str, Any]) -> dict[str, Any]:
    """What is to change; `other` keeps the entries the file does not give."""
    changes = {c: v for c, v in wanted.items() if c != "other" and getattr(identity, c) != v}
    if "other" in wanted:
        merged = (identity.other or {}) | wanted["other"]
        if merged != (identity.other or {}):
            changes["other"] = merged
    return changes
