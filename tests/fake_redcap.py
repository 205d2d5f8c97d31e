"""A REDCap server's API on 127.0.0.1 for tests: one project (`redcap_projects.Project`),
answered as REDCap answers the calls an import makes. Each call is a POST of a form: `token`,
`content` (project, metadata, event, formEventMapping, repeatingFormsEvents, record) and
`format` (csv or json; errors come in the format asked). A wrong token is refused (403), a
classic project has no events to list (400), and `dateRangeBegin` (YYYY-MM-DD HH:MM:SS, else
400) keeps the records changed after it (`changed`: each record's last change); `records[i]`
keeps the records listed and `fields[i]` the fields (the record ID, event and repeat columns
always). No records is an empty answer, as REDCap gives it. Each call's form but its token
is kept (`calls`), and `broken` makes every answer one status, content type and body."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from redcap_projects import Project

TOKEN = "0123456789ABCDEF0123456789ABCDEF"
# The API's metadata keys, in the order of the download's 18 headers.
METADATA_KEYS = (
    "field_name", "form_name", "section_header", "field_type", "field_label",
    "select_choices_or_calculations", "field_note", "text_validation_type_or_show_slider_number",
    "text_validation_min", "text_validation_max", "identifier", "branching_logic",
    "required_field", "custom_alignment", "question_number", "matrix_group_name",
    "matrix_ranking", "field_annotation",
)  # fmt: skip
CSV, JSON = "text/csv", "application/json; charset=utf-8"  # REDCap's CSV names no charset
Answer = tuple[int, str, str]  # status, content type, body


class FakeRedcap:
    """The server, serving while used as a context manager; `url` is its API URL."""

    def __init__(self, project: Project, *, token: str = TOKEN, title: str = "Shapes"):
        self.project = project
        self.token = token
        self.title = title
        self.changed = dict.fromkeys((r.record for r in project.rows), datetime(2024, 1, 1))
        self.calls: list[dict[str, str]] = []
        self.broken: Answer | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def __enter__(self) -> FakeRedcap:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, form: dict[str, str]) -> Answer:
        if self.broken is not None:
            return self.broken
        fmt = form.get("format", "json")
        if form.get("token") != self.token:
            return _error(403, fmt, "You do not have permissions to use the API")
        self.calls.append({k: v for k, v in form.items() if k != "token"})
        contents = {
            "project": self.info,
            "metadata": self.metadata,
            "event": self.events,
            "formEventMapping": self.form_events,
            "repeatingFormsEvents": self.repeating,
            "record": self.records,
        }
        content = contents.get(form.get("content", ""))
        if content is None:
            return _error(400, fmt, 'The value of the parameter "content" is not valid')
        return content(form, fmt)

    def info(self, form: dict[str, str], fmt: str) -> Answer:
        p = self.project
        return _table(fmt, [{
            "project_id": 15, "project_title": self.title, "is_longitudinal": int(p.longitudinal),
            "has_repeating_instruments_or_events": int(p.repeating), "surveys_enabled": 0,
            "record_autonumbering_enabled": 0, "missing_data_codes": "",
        }], one=True)  # fmt: skip

    def metadata(self, form: dict[str, str], fmt: str) -> Answer:
        rows = [
            dict(zip(METADATA_KEYS, row, strict=True)) for row in self.project.dictionary_rows()
        ]
        return _table(fmt, rows, header=METADATA_KEYS)

    def _events(self) -> list[str]:
        return list(dict.fromkeys(r.event for r in self.project.rows))

    def events(self, form: dict[str, str], fmt: str) -> Answer:
        if not self.project.longitudinal:
            return _error(400, fmt, "You cannot export events for classic projects")
        rows = [
            {"event_name": e.rsplit("_arm_", 1)[0].replace("_", " ").title(), "arm_num": _arm(e),
             "unique_event_name": e, "custom_event_label": "", "event_id": n, "days_offset": 0,
             "offset_min": 0, "offset_max": 0}
            for n, e in enumerate(self._events(), start=41)
        ]  # fmt: skip
        return _table(fmt, rows)

    def form_events(self, form: dict[str, str], fmt: str) -> Answer:
        if not self.project.longitudinal:
            return _error(400, fmt, "You cannot export form/event mappings for classic projects")
        p = self.project
        forms = {f.name: f.form for f in p.fields}
        rows = [
            {"arm_num": _arm(event), "unique_event_name": event, "form": form}
            for event in self._events()
            for form in p.forms
            if any(r.event == event and form in {forms[n] for n in r.cells} for r in p.rows)
        ]
        return _table(fmt, rows)

    def repeating(self, form: dict[str, str], fmt: str) -> Answer:
        pairs = dict.fromkeys((r.event, r.form) for r in self.project.rows if r.instance)
        rows = [
            ({"event_name": e} if self.project.longitudinal else {})
            | {"form_name": f, "custom_form_label": ""}
            for e, f in pairs
        ]
        return _table(fmt, rows)

    def records(self, form: dict[str, str], fmt: str) -> Answer:
        begin = form.get("dateRangeBegin")
        if begin is not None and not re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", begin):
            return _error(400, fmt, f"The value of dateRangeBegin ({begin}) is not valid")
        after = datetime.fromisoformat(begin) if begin else None
        listed = _listed(form, "records")
        p = self.project
        kept = [
            dict(zip(p.columns(), cells, strict=True))
            for row, cells in zip(p.rows, p.record_rows(), strict=True)
            if (after is None or self.changed[row.record] > after)
            and (not listed or row.record in listed)
        ]
        if not kept:
            return 200, CSV, ""
        if fields := _listed(form, "fields"):
            kept = [{k: v for k, v in c.items() if _of(k, fields)} for c in kept]
        return _table("csv", kept)


def _of(column: str, fields: list[str]) -> bool:
    """Whether a column is one of `fields`' (a checkbox's each choice's) or REDCap's own."""
    return column.startswith("redcap_") or column.split("___")[0] in fields


def _listed(form: dict[str, str], key: str) -> list[str]:
    """A list as PyCap sends it: `key[0]`, `key[1]`, …"""
    return [v for k, v in form.items() if re.fullmatch(rf"{key}\[\d+\]", k)]


def _arm(event: str) -> int:
    return int(event.rsplit("_arm_", 1)[1])


def _table(fmt: str, rows: list[dict[str, Any]], *, header=None, one: bool = False) -> Answer:
    """Rows as REDCap writes them: JSON (one object for the project's information) or CSV."""
    if fmt == "json":
        return 200, JSON, json.dumps(rows[0] if one else rows)
    text = io.StringIO()
    writer = csv.DictWriter(text, header or list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return 200, CSV, text.getvalue()


def _error(status: int, fmt: str, message: str) -> Answer:
    if fmt == "json":
        return status, JSON, json.dumps({"error": message})
    return status, CSV, f"ERROR: {message}"


def _handler(fake: FakeRedcap) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8")
            form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
            status, kind, text = fake.answer(form)
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    return Handler
