"""Accession at the bench: one primary specimen and its aliquots, placed and labelled.

The common case is short: scan the participant (or a collection-kit tube, which also fixes the
visit, the type and the tube's reserved ID), type the quantity, save. Everything else starts
from a default: the participant's latest visit, the type and aliquot split last used at this
workstation, times of now, and the first freezer (or the last destination, or a box scanned
while the form is open). The form checks only that number fields hold numbers; the services
decide the rest, and a refusal is shown at the field it names. Nothing is saved on a refusal.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Select, Static
from textual.widgets.option_list import Option

from biobank.domain import sprec
from biobank.domain.specimen_values import TIME_WORDS, FarFromVisit, far_from_visit
from biobank.errors import BiobankError, NotFound, ValidationError
from biobank.services import specimens
from biobank.services.kits import ReservedRead
from biobank.services.lineage import aliquot
from biobank.services.participants import add_visit, list_participants, show_participant
from biobank.services.scan import KitScan, ParticipantScan, Scan, UnitScan
from biobank.services.specimen_read import SpecimenRead
from biobank.services.storage import storage_tree
from biobank.terminal_text import shown
from tui.printing import print_specimen_labels
from tui.remembered import LastUsed, load_last_used, save_last_used
from tui.screens.base import FormErrors, WorkScreen
from tui.text import plain
from tui.widgets.checkbox import Checkbox
from tui.widgets.field_row import row


class TypeDefaults(NamedTuple):
    name: str
    container: str | None
    unit: str


# The lupus registry's everyday types first, with the tube they usually come in.
COMMON_TYPES = {
    "SER": TypeDefaults("serum", "SST", "uL"),
    "PL1": TypeDefaults("plasma, single spun", "PED", "uL"),
    "PL2": TypeDefaults("plasma, double spun", "PED", "uL"),
    "BLD": TypeDefaults("whole blood", "PED", "uL"),
    "BUF": TypeDefaults("buffy coat", "PED", "uL"),
    "CEL": TypeDefaults("PBMC, viable", "CPT", "cells"),
    "URN": TypeDefaults("urine, spot", "PPS", "uL"),
    "URM": TypeDefaults("urine, first morning", "PPS", "uL"),
    "TIS": TypeDefaults("kidney biopsy tissue", None, "mg"),
}
# A service error names its own field; these are shown at the form field that holds the value.
SHOWN_AT = {
    "kit_id": "participant",
    "received_at": "collected_at",
    "unit": "quantity",
    "box": "destination",
    "position": "destination",
    "label": "visit",
}
FIELDS = (
    "participant", "visit", "specimen_type", "container_type", "collected_at", "processed_at",
    "quantity", "count", "volume", "destination",
)  # fmt: skip
MAX_MATCHES = 20
NEW_VISIT = "unscheduled"  # a visit made for a collection far from the chosen one: then its day


def type_defaults(code: str) -> TypeDefaults:
    if code in COMMON_TYPES:
        return COMMON_TYPES[code]
    return TypeDefaults("", None, "uL" if sprec.is_fluid_type(code) else "mg")


def type_options() -> list[tuple[str, str]]:
    rest = sorted(set(sprec.fluid_types()) | set(sprec.solid_types()) - set(COMMON_TYPES))
    common = [(f"{code}  {d.name}", code) for code, d in COMMON_TYPES.items()]
    return common + [(code, code) for code in rest]


_last_used: WeakKeyDictionary[App, LastUsed] = WeakKeyDictionary()


def last_used(app: App) -> LastUsed:
    """Read from this workstation's file once per app run (`tui.remembered`), then kept
    (across sign-ins) and written back on each save."""
    if app not in _last_used:
        _last_used[app] = load_last_used(app.settings.workstation)
    return _last_used[app]


def now_text() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")


def parse_time(text: str, field: str) -> datetime | None:
    """`YYYY-MM-DD HH:MM`, or `HH:MM` for today, in this workstation's time zone."""
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) <= len("HH:MM:SS"):
            parsed = datetime.combine(date.today(), time.fromisoformat(text))
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"{TIME_WORDS[field]} must be YYYY-MM-DD HH:MM or HH:MM",
            field=field,
            value=text,
        ) from None
    return parsed if parsed.tzinfo else parsed.astimezone()


def parse_number(text: str, field: str, convert: type = float) -> float | int:
    try:
        return convert(text.strip())
    except ValueError:
        kind = "a whole number" if convert is int else "a number"
        raise ValidationError(f"{field} must be {kind}", field=field, value=text) from None


class NewVisitPrompt(ModalScreen[bool]):
    """A collection far from the chosen visit: make a visit on the collection's day and save
    the tube there (Enter or y), or go back to the form with nothing saved (n or Escape)."""

    DEFAULT_CSS = """
    NewVisitPrompt { align: center middle; }
    NewVisitPrompt Vertical { width: 64; height: auto; border: round $warning; padding: 1 2; }
    """
    BINDINGS = [  # noqa: RUF012
        Binding("enter,y", "answer(True)", "New visit, then save", id="new_visit_yes"),
        Binding("n,escape", "answer(False)", "Back to the form", id="new_visit_no"),
    ]

    def __init__(self, far: FarFromVisit) -> None:
        super().__init__()
        self.far = far

    def compose(self) -> ComposeResult:
        far = self.far
        with Vertical():
            yield Static(plain(f"{far.fact}: more than visit_gap_days ({far.allowed}) allows."))
            yield Static(f"Make a new visit on {far.collected_on} and save the tube there?")
            yield Static(
                "Enter/y: new visit and save    n/Escape: back to the form", classes="muted"
            )

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class AccessionScreen(FormErrors, WorkScreen):
    FIELDS = FIELDS
    SHOWN_AT = SHOWN_AT
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+s", "save", "Save (and print labels)", id="save_accession"),
        Binding("n", "next_accession", "Next accession, same visit", id="next_accession"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.participant: str | None = None  # the code whose visits the form shows
        self.visits: list[Any] = []  # their visits (VisitRead), oldest first
        self.kit: str | None = None  # a scanned kit tube's reserved accession ID
        self.saving = False
        self.saved = False

    def compose_body(self) -> ComposeResult:
        remembered = last_used(self.app)
        defaults = type_defaults(remembered.specimen_type)
        containers = [(code, code) for code in sprec.allowed_values("fluid", "container")]
        with VerticalScroll(id="accession-form"):
            yield Static("New accession", id="accession-title", classes="title")
            yield row(
                "Participant",
                Input(placeholder="scan, or part of the code ⏎", id="participant", compact=True),
                Static("", id="participant-note", classes="note", markup=False),
                field="participant",
            )
            yield OptionList(id="matches")
            yield row(
                "Visit",
                Select([], prompt="no visit", id="visit", compact=True),
                field="visit",
            )
            yield row(
                "Type",
                Select(
                    type_options(),
                    allow_blank=False,
                    value=remembered.specimen_type,
                    id="specimen_type",
                    compact=True,
                ),
                field="specimen_type",
            )
            yield row(
                "Container",
                Select(
                    containers,
                    prompt="none",
                    value=defaults.container or Select.NULL,
                    id="container_type",
                    compact=True,
                ),
                field="container_type",
            )
            yield row(
                "Collected",
                Input(now_text(), id="collected_at", compact=True),
                field="collected_at",
            )
            yield row(
                "Processed",
                Input(now_text(), id="processed_at", compact=True),
                field="processed_at",
            )
            yield row(
                "Quantity",
                Input(type="number", id="quantity", compact=True),
                Static(defaults.unit, classes="unit"),
                field="quantity",
            )
            yield row(
                "Aliquots",
                Input(remembered.count, type="integer", id="count", compact=True),
                Static("×", classes="times"),
                Input(remembered.volume, type="number", id="volume", compact=True),
                Static(defaults.unit, classes="unit"),
                Static("", id="count-error", classes="field-error", markup=False),
                field="volume",
            )
            yield row(
                "Destination",
                Input(placeholder="scan a box, or a barcode", id="destination", compact=True),
                Static("", id="destination-note", classes="note", markup=False),
                field="destination",
            )
            yield Checkbox("Print labels on save", True, id="print_labels", compact=True)
            yield Static("", id="saved", markup=False)

    def on_mount(self) -> None:
        self.query_one("#matches", OptionList).display = False
        remembered = last_used(self.app)
        if remembered.destination:
            self.set_destination(remembered.destination, "as last time")
        else:
            self.app.run_db(
                lambda session: storage_tree(session, actor=self.app.actor),
                self._auto_destination,
                readonly=True,
            )
        self.query_one("#participant", Input).focus()

    def _auto_destination(self, tree) -> None:
        freezer = next((node.unit for node in tree if node.unit.kind == "freezer"), None)
        if freezer is None:
            self.query_one("#destination-note", Static).update("no freezer yet: not placed")
        elif not self.query_one("#destination", Input).value:
            self.set_destination(freezer.barcode, f"auto: {freezer.path}")

    def set_destination(self, barcode: str, note: str) -> None:
        self.query_one("#destination", Input).value = barcode
        self.query_one("#destination-note", Static).update(plain(note))

    # --- participant, kit and destination ----------------------------------------------

    def take_scan(self, result: Scan) -> bool:
        if isinstance(result, ParticipantScan | KitScan) and self.saved:
            self._start_over()
        match result:
            case ParticipantScan(participant_code=code):
                self.use_participant(code)
            case KitScan(reserved=reserved):
                self.use_participant(reserved.participant_code, kit=reserved)
            case UnitScan(unit=unit):
                self.set_destination(unit.barcode, f"{unit.kind} {unit.path}")
            case _:
                return False
        return True

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "participant":
            self.find_participant(event.value)
        else:
            self.focus_next()

    def find_participant(self, text: str) -> None:
        """A code, or part of one: one match is taken, several are listed to choose from."""
        wanted = text.strip().upper()
        if not wanted:
            return
        actor = self.app.actor

        def search(session) -> list[str]:
            found = list_participants(
                session, actor=actor, code_contains=wanted, limit=MAX_MATCHES + 1
            )
            return [p.code for p in found]

        self.app.run_db(search, lambda codes: self._matched(wanted, codes), readonly=True)

    def _matched(self, wanted: str, codes: list[str]) -> None:
        if wanted in codes or len(codes) == 1:
            self.use_participant(wanted if wanted in codes else codes[0])
        elif not codes:
            self.refuse(NotFound(f"no participant code contains {wanted}", field="participant"))
        else:
            matches = self.query_one("#matches", OptionList)
            matches.set_options(Option(code, id=code) for code in codes[:MAX_MATCHES])
            matches.display = True
            matches.focus()
            more = len(codes) > MAX_MATCHES
            count = f"more than {MAX_MATCHES}" if more else str(len(codes))
            self.query_one("#participant-note", Static).update(f"{count} matches")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.use_participant(event.option_id)

    def use_participant(self, code: str, kit: ReservedRead | None = None) -> None:
        self.app.run_db(
            lambda session: show_participant(session, actor=self.app.actor, code=code),
            lambda participant: self._show_participant(participant, kit),
            readonly=True,
        )

    def _show_participant(self, participant, kit: ReservedRead | None) -> None:
        self.participant = participant.code
        self.kit = kit.accession_id if kit else None
        self.query_one("#matches", OptionList).display = False
        self.query_one("#participant", Input).value = participant.code
        self.visits = participant.visits
        latest = participant.visits[-1].label if participant.visits else None
        self.show_visits(kit.visit_label if kit else latest)
        if kit and kit.specimen_type:
            self.query_one("#specimen_type", Select).value = kit.specimen_type
        if kit:
            note = f"kit tube {kit.accession_id} ({kit.kit_code}) keeps its ID"
            self.query_one("#accession-title", Static).update(f"New accession: {note}")
        else:
            note = f"{len(participant.visits)} visits"
            self.query_one("#accession-title", Static).update("New accession")
        self.query_one("#participant-note", Static).update(note)
        self.query_one("#participant-error", Static).update("")
        self.query_one("#quantity", Input).focus()

    def show_visits(self, chosen: str | None) -> None:
        visits = self.query_one("#visit", Select)
        visits.set_options((plain(f"{v.label}  {v.visit_date}"), v.label) for v in self.visits)
        if chosen is not None:
            visits.value = chosen

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "specimen_type":
            return
        defaults = type_defaults(event.value)
        containers = self.query_one("#container_type", Select)
        if defaults.container is None:
            containers.clear()
        else:
            containers.value = defaults.container
        for unit in self.query(".unit").results(Static):
            unit.update(defaults.unit)

    # --- saving ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "save":
            return not (self.saved or self.saving)
        if action == "next_accession":
            return self.saved
        return True

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value.strip()

    def read_form(self) -> tuple[dict, dict | None]:
        """The service arguments of the accession and of the aliquots (None: no aliquots).
        Only the shape of typed values is checked here."""
        typed = self._value("participant").upper()
        if not typed or typed != self.participant:
            raise ValidationError(
                "scan the participant or a kit tube, or type the code (or part) and press Enter",
                field="participant",
                value=typed,
            )
        specimen_type = self.query_one("#specimen_type", Select).value
        visit = self.query_one("#visit", Select)
        container = self.query_one("#container_type", Select)
        destination = self._value("destination") or None
        accession = {
            "participant": self.participant,
            "visit": None if visit.is_blank() else visit.value,
            "specimen_type": specimen_type,
            "container_type": None if container.is_blank() else container.value,
            "quantity": parse_number(self._value("quantity"), "quantity"),
            "unit": type_defaults(specimen_type).unit,
            "collected_at": parse_time(self._value("collected_at"), "collected_at"),
            "processed_at": parse_time(self._value("processed_at"), "processed_at"),
            "destination": destination,
            "kit_id": self.kit,
        }
        count, volume = self._value("count"), self._value("volume")
        if not count and not volume:
            return accession, None
        if not count or not volume:
            blank = "volume" if count else "count"
            raise ValidationError(
                "give the number of aliquots and the volume of each, or neither", field=blank
            )
        aliquots = {
            "count": parse_number(count, "count", int),
            "volume": parse_number(volume, "volume"),
            "destination": destination,
        }
        return accession, aliquots

    def action_save(self) -> None:
        """Save; a collection far from the chosen visit first asks for a visit of its own."""
        self.clear_errors()
        try:
            accession, aliquots = self.read_form()
        except ValidationError as error:
            self.refuse(error)
            return
        visit = next((v for v in self.visits if v.label == accession["visit"]), None)
        far = visit and far_from_visit(
            visit=visit.label,
            visit_date=visit.visit_date,
            collected_at=accession["collected_at"],
            allowed=self.app.settings.visit_gap_days,
        )
        if not far:
            self._save(accession, aliquots)
            return

        def answered(new_visit: bool | None) -> None:
            if new_visit:
                self._save(accession, aliquots, new_visit_on=far.collected_on)

        self.app.push_screen(NewVisitPrompt(far), answered)

    def _save(
        self, accession: dict, aliquots: dict | None, new_visit_on: date | None = None
    ) -> None:
        actor, gap_days = self.app.actor, self.app.settings.visit_gap_days
        self.saving = True

        def save(session) -> tuple[list[SpecimenRead], Any]:
            """One unit of work, as the CLI's `specimen accession --aliquots`, after the
            visit made for the collection (if asked)."""
            visit, form = None, accession
            if new_visit_on is not None:
                visit = add_visit(
                    session,
                    actor=actor,
                    participant=accession["participant"],
                    label=f"{NEW_VISIT} {new_visit_on}",
                    visit_date=new_visit_on,
                )
                form = accession | {"visit": visit.label}
            room = aliquots["count"] if aliquots else 0  # the set placed together
            primary = specimens.accession(
                session, actor=actor, visit_gap_days=gap_days, room_for_aliquots=room, **form
            )
            if aliquots is None:
                return [primary], visit
            made = aliquot(session, actor=actor, parent=primary.accession_id, **aliquots)
            detail = specimens.show_specimen(session, actor=actor, accession=primary.accession_id)
            return [detail.specimen, *made], visit

        self.app.run_db(save, self._saved, failed=self._not_saved)

    def _not_saved(self, error: BiobankError) -> None:
        self.saving = False
        self.show_at_field(error)

    def _saved(self, result: tuple[list[SpecimenRead], Any]) -> None:
        made, visit = result
        self.saving, self.saved = False, True
        if visit is not None:  # the next tube of this collection goes to it too
            self.visits = sorted([*self.visits, visit], key=lambda v: (v.visit_date, v.id))
            self.show_visits(visit.label)
        self.remember(made[0].specimen_type)
        lines = [
            f"{s.accession_id}  {s.kind} {s.specimen_type} {s.quantity:g} {s.unit}  "
            f"{shown(s.location or 'not placed')}"
            for s in made
        ]
        lines.append("n: next accession for this visit · Escape: back")
        saved = self.query_one("#saved", Static)
        saved.update("Saved\n" + "\n".join(lines))
        self.call_after_refresh(saved.scroll_visible)  # once its new lines are laid out
        self.set_focus(None)
        self.refresh_bindings()
        self.app.notify(f"Accessioned {made[0].accession_id} and {len(made) - 1} aliquots")
        if self.query_one("#print_labels", Checkbox).value:
            print_specimen_labels(self.app, [s.accession_id for s in made])

    def remember(self, specimen_type: str) -> None:
        """What the next accession here starts from, now and after a restart."""
        remembered = last_used(self.app)
        remembered.specimen_type = specimen_type
        remembered.count, remembered.volume = self._value("count"), self._value("volume")
        remembered.destination = self._value("destination") or None
        try:
            save_last_used(self.app.settings.workstation, remembered)
        except OSError as error:
            self.app.notify(
                f"The form's values are not remembered after a restart: {error}",
                severity="warning",
            )

    def action_next_accession(self) -> None:
        self._start_over()
        self.query_one("#quantity", Input).focus()

    def _start_over(self) -> None:
        """A fresh form for the same participant and visit (a scan may replace them)."""
        self.saved, self.kit = False, None
        self.clear_errors()
        for field in ("collected_at", "processed_at"):
            self.query_one(f"#{field}", Input).value = now_text()
        self.query_one("#quantity", Input).value = ""
        self.query_one("#saved", Static).update("")
        self.query_one("#accession-title", Static).update("New accession")
        self.refresh_bindings()
