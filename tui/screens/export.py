"""Export for a cohort (PIs): the filters, the uses consent must allow, how the data is
de-identified and in which formats. Ctrl+S previews the counts (nothing is written); Ctrl+Y
exports in a worker with a progress bar, then shows the files and the manifest.

The form checks only the shape of numbers, dates and the condition (the condition as it is
typed); the services decide the rest, and a refusal is shown at the field it names.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, ProgressBar, Select, Static

from biobank.domain.cohort import CohortQuery, describe, load_query, parse_conditions
from biobank.domain.dates import parse_day
from biobank.domain.permissions import Permission
from biobank.domain.vocabulary import DeidentificationMode as Mode
from biobank.errors import BiobankError, ValidationError
from biobank.export.formats import DEFAULT_FORMAT, NAMES
from biobank.export.shapes import Shape
from biobank.services import cohort_counts, consent, exports, saved_queries
from biobank.services.cohort_counts import CohortPreview
from biobank.services.consent import StatementRead
from biobank.services.exports import ExportRequest, ExportResult
from biobank.services.saved_queries import SavedQueryRead
from tui.screens.base import FormErrors, WorkScreen
from tui.text import plain
from tui.widgets.checkbox import Checkbox
from tui.widgets.field_row import row

MODES = [
    ("safe harbor: codes, years only", Mode.safe_harbor),
    ("limited data set: needs a DUA", Mode.limited),
]
IDENTIFIED = ("identified (admins, audited)", Mode.identified)
DEFAULT_USE = "FUTURE_RESEARCH"  # as the CLI: an export names at least one use
FIELDS = (
    "saved", "specimen_types", "min_quantity", "max_freeze_thaws", "collected_from",
    "collected_to", "sex", "min_age", "max_age", "where", "uses", "mode", "dua_reference",
    "formats", "directory", "reserve_request", "name",
)  # fmt: skip
# A service error names its own field; these are shown at the form field that holds the value.
SHOWN_AT = {"specimen_type": "specimen_types", "phenotypes": "where", "storage": "saved"}
FILTER_INPUTS = (  # form field, label, placeholder
    ("specimen_types", "Types", "SER, PL1 (any)"),
    ("min_quantity", "Min quantity", "e.g. 200"),
    ("max_freeze_thaws", "Max thaws", "any"),
    ("collected_from", "Collected from", "YYYY-MM-DD"),
    ("collected_to", "Collected to", "YYYY-MM-DD"),
    ("sex", "Sex", "female, male (any)"),
    ("min_age", "Min age", "at collection"),
    ("max_age", "Max age", "at collection"),
)
COUNTED = {field for field, _, _ in FILTER_INPUTS} | {"where"}  # what counts depend on


def _words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def _number(text: str, field: str, kind: type[int] | type[float]) -> int | float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValidationError(f"{field} must be {what}", field=field, value=text) from None


def _day(text: str, field: str):
    return parse_day(text, field) if text.strip() else None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _exclusions(exclusions: dict[str, dict[str, int]]) -> list[Text]:
    if not exclusions:
        return [Text("Nothing left out by consent.")]
    lines = [Text("Left out by consent:", style="yellow")]
    for reason, n in exclusions.items():
        lines.append(
            Text(
                f"  {reason}: {_plural(n['specimens'], 'specimen')}, "
                f"{_plural(n['participants'], 'participant')}",
                style="yellow",
            )
        )
    return lines


def preview_text(preview: CohortPreview) -> Text:
    lines = [
        Text(
            f"Selected: {_plural(preview.specimens, 'specimen')} of "
            f"{_plural(preview.participants, 'participant')} "
            f"({preview.matched_before_consent} match the filters; consent for "
            f"{', '.join(preview.uses)} as of {preview.as_of}).",
            style="bold",
        ),
        *_exclusions(preview.exclusions),
        *_breakdowns(preview),
        Text("Ctrl+Y exports them; nothing is written yet."),
    ]
    return Text("\n").join(lines)


BREAKDOWNS = ("sex", "age-band", "type")  # what the preview shows the cohort by


def _breakdowns(preview: CohortPreview) -> list[Text]:
    """A line per breakdown: each stratum's specimens (participants), a small cell
    suppressed."""
    lines = []
    for breakdown in preview.breakdowns:
        cells = [
            f"{s.value} {s.specimens} ({s.participants})"
            if s.specimens is not None
            else f"{s.value} suppressed"
            for s in breakdown.strata
        ]
        lines.append(plain(f"By {breakdown.by}: " + ", ".join(cells)))
    return lines


def result_text(result: ExportResult) -> Text:
    counts = result.counts
    lines = [
        Text(
            f"Export {result.run_code}: {_plural(counts['specimens'], 'specimen')} of "
            f"{_plural(counts['participants'], 'participant')}, {result.mode.value}, "
            f"for {', '.join(result.uses)} as of {result.as_of}",
            style="bold green",
        ),
        plain(f"Folder: {result.directory}"),
    ]
    for f in result.files:
        lines.append(Text(f"  {f.name:<24} {f.rows:>8} rows  SHA-256 {f.sha256[:12]}…"))
    lines += _exclusions(result.exclusions)
    held = result.reservation
    if held is not None:
        lines.append(plain(f"Reserved for {held.request}: {_plural(held.reserved, 'tube')}"))
        lines += [
            Text(f"  not reserved, {why}: {_plural(n, 'tube')}", style="yellow")
            for why, n in held.left_out.items()
        ]
    lines.append(plain(f"Manifest: {result.manifest}  (Ctrl+G reads it)"))
    return Text("\n").join(lines)


class ManifestScreen(ModalScreen):
    """The manifest as written: what was asked, what came out, and each file's checksum."""

    BINDINGS = [Binding("escape", "dismiss", "Close", id="close_manifest")]  # noqa: RUF012

    def __init__(self, path: Path, text: str) -> None:
        super().__init__()
        self.path = path
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="manifest-box"):
            yield Static(f"{self.path}  (Escape closes)", classes="title", markup=False)
            with VerticalScroll(id="manifest-scroll"):
                yield Static(self.text, id="manifest-text", markup=False)

    def on_mount(self) -> None:
        self.query_one("#manifest-scroll").focus()


class ExportScreen(FormErrors, WorkScreen):
    FIELDS = FIELDS
    SHOWN_AT = SHOWN_AT
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+s", "preview", "Preview the counts", id="export_preview"),
        Binding("ctrl+y", "export", "Export", id="export_run"),
        Binding("ctrl+b", "save_query", "Save the query by name", id="export_save_query"),
        Binding("ctrl+g", "manifest", "Read the manifest", id="export_manifest"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, SavedQueryRead] = {}
        # The loaded saved query's filters this form has no field for (statuses, storage, study).
        self.extras: dict[str, object] = {}
        self.previewed = False
        self.running = False
        self.result: ExportResult | None = None

    def compose_body(self) -> ComposeResult:
        modes = list(MODES)
        if self.app.actor.can(Permission.export_identified):
            modes.append(IDENTIFIED)
        with VerticalScroll(id="export-form"):
            yield Static("Export for a cohort", classes="title")
            yield row(
                "Saved query",
                Select([], prompt="none: the filters below", id="saved", compact=True),
                field="saved",
            )
            yield Static("", id="saved-note", classes="muted", markup=False)
            for field, label, placeholder in FILTER_INPUTS:
                yield row(
                    label, Input(placeholder=placeholder, id=field, compact=True), field=field
                )
            yield row(
                "Condition",
                Input(
                    placeholder="ln_class in (III, IV) and upcr >= 0.25", id="where", compact=True
                ),
            )
            yield Static("", id="where-error", classes="field-error", markup=False)
            yield row("Uses", Vertical(id="uses"), field="uses")
            yield row(
                "Mode",
                Select(modes, allow_blank=False, value=Mode.safe_harbor, id="mode", compact=True),
                field="mode",
            )
            dua = row(
                "DUA reference",
                Input(placeholder="a registered agreement", id="dua_reference", compact=True),
                field="dua_reference",
            )
            dua.id, dua.display = "dua-row", False
            yield dua
            yield row(
                "Formats",
                *[
                    Checkbox(f, f == DEFAULT_FORMAT, name=f, classes="format", compact=True)
                    for f in NAMES
                ],
                field="formats",
            )
            yield row(
                "",
                Checkbox("also one row per participant", id="per_participant", compact=True),
            )
            yield row(
                "",
                Checkbox("long: a row per specimen and value", id="long_shape", compact=True),
            )
            yield row(
                "Folder", Input(str(Path.cwd()), id="directory", compact=True), field="directory"
            )
            yield row(
                "Reserve for",
                Input(placeholder="a request (optional)", id="reserve_request", compact=True),
                field="reserve_request",
            )
            with Horizontal(classes="field-row", id="export-buttons"):
                yield Button("Preview ^S", action="screen.preview", compact=True)
                yield Button("Export ^Y", variant="primary", action="screen.export", compact=True)
                yield Input(placeholder="query name", id="name", compact=True)
                yield Button("Save query ^B", action="screen.save_query", compact=True)
            yield Static("", id="name-error", classes="field-error", markup=False)
            yield Static(
                "Ctrl+S previews the counts; nothing is written before Ctrl+Y.",
                id="counts",
                classes="muted",
            )
            yield ProgressBar(id="export-progress", show_eta=False)
            yield Static("", id="export-result")

    def on_mount(self) -> None:
        self.query_one("#export-progress").display = False
        self.query_one("#saved-note").display = False
        actor = self.app.actor

        def load(session) -> tuple[list[StatementRead], list[SavedQueryRead]]:
            return (
                consent.list_statements(session, actor=actor),
                saved_queries.list_saved_queries(session, actor=actor),
            )

        self.app.run_db(load, self.loaded, readonly=True)
        self.query_one("#specimen_types", Input).focus()

    def loaded(self, found: tuple[list[StatementRead], list[SavedQueryRead]]) -> None:
        statements, saved = found
        self.query_one("#uses", Vertical).mount_all(
            Checkbox(
                s.code,
                s.code == DEFAULT_USE,
                name=s.code,
                tooltip=plain(s.text),
                classes="use",
                compact=True,
            )
            for s in statements
        )
        self.show_saved(saved)

    def show_saved(self, saved: list[SavedQueryRead]) -> None:
        self.saved = {s.name: s for s in saved}
        select = self.query_one("#saved", Select)
        select.set_options([(name, name) for name in self.saved])

    # --- the form ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "export":
            return not self.running
        if action == "manifest":
            return self.result is not None
        return True

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "where":  # the condition is checked as it is typed
            error = self.query_one("#where-error", Static)
            try:
                if event.value.strip():
                    parse_conditions(event.value)
                error.update("")
            except ValidationError as refused:
                error.update(plain(refused.message))
        if event.input.id in COUNTED:
            self._changed()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "name":
            self.action_save_query()
        else:
            self.focus_next()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.has_class("use"):
            self._changed()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "mode":
            self.query_one("#dua-row").display = event.value == Mode.limited
        elif event.select.id == "saved":
            saved = self.saved.get(event.value)
            self.fill(saved.query if saved else CohortQuery())

    def _changed(self) -> None:
        """The counts shown are for the filters and uses as they were."""
        if self.previewed:
            self.previewed = False
            self.query_one("#counts", Static).update("Changed: Ctrl+S previews again.")

    def fill(self, query: CohortQuery) -> None:
        """A saved query into the form; what the form has no field for is kept and named."""
        values = {
            "specimen_types": ", ".join(query.specimen_types),
            "min_quantity": "" if query.min_quantity is None else f"{query.min_quantity:g}",
            "max_freeze_thaws": ""
            if query.max_freeze_thaws is None
            else str(query.max_freeze_thaws),
            "collected_from": query.collected_from.isoformat() if query.collected_from else "",
            "collected_to": query.collected_to.isoformat() if query.collected_to else "",
            "sex": ", ".join(query.sex),
            "min_age": "" if query.min_age is None else str(query.min_age),
            "max_age": "" if query.max_age is None else str(query.max_age),
            "where": describe(query.phenotypes) if query.phenotypes else "",
        }
        for field, value in values.items():
            self.query_one(f"#{field}", Input).value = value
        self.extras = {"statuses": query.statuses, "storage": query.storage, "study": query.study}
        kept = CohortQuery(**self.extras)
        also = kept.model_dump(exclude_defaults=True)
        note = self.query_one("#saved-note", Static)
        note.update(plain("Also: " + "; ".join(f"{k} {v}" for k, v in also.items())))
        note.display = bool(also)

    def read_saved(self) -> str | None:
        """The saved query the form started from: the filters narrow it (the service's
        `cohort.narrowed`), so emptying one of its fields here would widen it, and is refused."""
        value = self.query_one("#saved", Select).value
        return value if isinstance(value, str) and value in self.saved else None

    def read_query(self) -> CohortQuery:
        """The filters given, as a query (only those set: a saved query is narrowed by
        them); only the shape of numbers, dates and the condition is checked here."""

        def text(field: str) -> str:
            return self.query_one(f"#{field}", Input).value

        where = text("where").strip()
        given = self.extras | {
            "specimen_types": _words(text("specimen_types")),
            "min_quantity": _number(text("min_quantity"), "min_quantity", float),
            "max_freeze_thaws": _number(text("max_freeze_thaws"), "max_freeze_thaws", int),
            "collected_from": _day(text("collected_from"), "collected_from"),
            "collected_to": _day(text("collected_to"), "collected_to"),
            "sex": [s.lower() for s in _words(text("sex"))],
            "min_age": _number(text("min_age"), "min_age", int),
            "max_age": _number(text("max_age"), "max_age", int),
            "phenotypes": parse_conditions(where).model_dump(mode="json") if where else None,
        }
        given = {k: v for k, v in given.items() if v is not None and v != []}
        saved = self.saved.get(self.read_saved() or "")
        if saved is not None:
            kept = saved.query.model_dump(exclude_defaults=True)
            emptied = [SHOWN_AT.get(k, k) for k in kept if k not in given]
            if emptied:
                raise ValidationError(
                    f"the saved query {saved.name!r} is narrowed here, never widened: "
                    f"{emptied[0]} cannot be emptied (choose no saved query to start afresh)",
                    field=emptied[0],
                )
        return load_query(given)

    def read_uses(self) -> list[str]:
        return [c.name for c in self.query(".use").results(Checkbox) if c.value]

    def read_request(self) -> tuple[ExportRequest, Path]:
        directory = self.query_one("#directory", Input).value.strip()
        if not directory:
            raise ValidationError("name the folder the export goes in", field="directory")
        dua = self.query_one("#dua_reference", Input).value.strip()
        reserve = self.query_one("#reserve_request", Input).value.strip()
        mode = self.query_one("#mode", Select).value
        request = ExportRequest(
            query=self.read_query(),
            saved=self.read_saved(),
            uses=self.read_uses(),
            mode=mode,
            formats=[c.name for c in self.query(".format").results(Checkbox) if c.value],
            per_participant=self.query_one("#per_participant", Checkbox).value,
            shape=Shape.long if self.query_one("#long_shape", Checkbox).value else Shape.wide,
            dua_reference=(dua or None) if mode == Mode.limited else None,
            reserve_request=reserve or None,
            window_days=self.app.settings.phenotype_window_days,
        )
        return request, Path(directory).expanduser()

    # --- preview, export, save ---------------------------------------------------------

    def action_preview(self) -> None:
        self.clear_errors()
        try:
            query, saved, uses = self.read_query(), self.read_saved(), self.read_uses()
        except ValidationError as error:
            self.refuse(error)
            return
        actor, settings = self.app.actor, self.app.settings
        mode = self.query_one("#mode", Select).value
        self.query_one("#counts", Static).update("Counting…")
        self.app.run_db(
            lambda session: cohort_counts.preview_cohort(
                session,
                actor=actor,
                query=query,
                saved=saved,
                uses=uses,
                window_days=settings.phenotype_window_days,
                by=list(BREAKDOWNS),
                small_cell=settings.small_cell,
                mode=mode if isinstance(mode, Mode) else Mode.safe_harbor,
            ),
            self.show_preview,
            readonly=True,
            failed=self.not_counted,
        )

    def show_preview(self, preview: CohortPreview) -> None:
        counts = self.query_one("#counts", Static)
        counts.update(preview_text(preview))
        counts.scroll_visible()
        self.previewed = True

    def not_counted(self, error: BiobankError) -> None:
        self.show_at_field(error)
        self.query_one("#counts", Static).update(plain(f"Not counted: {error.message}"))

    def action_export(self) -> None:
        if self.running:
            return
        self.clear_errors()
        try:
            request, directory = self.read_request()
        except ValidationError as error:
            self.refuse(error)
            return
        self.running = True
        self.refresh_bindings()
        bar = self.query_one("#export-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self.query_one("#export-result", Static).update("Exporting…")
        bar.scroll_visible()
        app, actor = self.app, self.app.actor

        def report(done: int, total: int) -> None:  # in the worker: hand it to the UI thread
            app.call_from_thread(self.advance, done, total)

        def run(started: str) -> None:  # the run is on record: now its files
            self.app.run_db(
                lambda session: exports.run_export(
                    session, actor=actor, request=request, directory=directory,
                    started=started, progress=report,
                ),
                self.exported,
                failed=self.not_exported,
            )  # fmt: skip

        self.app.run_db(
            lambda session: exports.begin_export(
                session, actor=actor, request=request, directory=directory
            ),
            run,
            failed=self.not_exported,
        )

    def advance(self, done: int, total: int) -> None:
        """`done` more of `total` candidates gone through (the service counts in steps)."""
        if self.is_attached:
            self.query_one("#export-progress", ProgressBar).update(total=total, advance=done)

    def exported(self, result: ExportResult) -> None:
        self.app.notify(f"Export {result.run_code} written to {result.directory}")
        if not self.is_attached:  # left while it ran: the notice says where it went
            return
        self.running = False
        self.result = result
        bar = self.query_one("#export-progress", ProgressBar)
        bar.update(total=bar.total or 1, progress=bar.total or 1)
        shown = self.query_one("#export-result", Static)
        shown.update(result_text(result))
        self.refresh_bindings()
        shown.scroll_visible()

    def not_exported(self, error: BiobankError) -> None:
        if not self.is_attached:
            return
        self.running = False
        self.show_at_field(error)
        self.query_one("#export-progress").display = False
        self.query_one("#export-result", Static).update(plain(f"Not exported: {error.message}"))
        self.refresh_bindings()

    def action_save_query(self) -> None:
        self.clear_errors()
        name = self.query_one("#name", Input).value.strip()
        try:
            if not name:
                raise ValidationError("name the query to save it", field="name")
            query = self.read_query()
        except ValidationError as error:
            self.refuse(error)
            return
        actor = self.app.actor

        def save(session) -> list[SavedQueryRead]:
            saved_queries.save_query(session, actor=actor, name=name, query=query)
            return saved_queries.list_saved_queries(session, actor=actor)

        def saved(queries: list[SavedQueryRead]) -> None:
            self.show_saved(queries)
            self.app.notify(f"Saved the query {name!r}")

        self.app.run_db(save, saved, failed=self.show_at_field)

    def action_manifest(self) -> None:
        if self.result is None:
            return
        path = self.result.manifest
        try:
            text = path.read_text()
        except OSError as error:
            self.app.show_error(BiobankError(f"cannot read the manifest {path}: {error.strerror}"))
            return
        self.app.push_screen(ManifestScreen(path, text))
