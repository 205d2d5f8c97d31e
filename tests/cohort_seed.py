"""A small registry for cohort and export tests: five participants with phenotypes, consent
and serum, built through the real services."""

from datetime import date, datetime

from inventory import accession_tube

from biobank.db import uow
from biobank.services import (
    consent,
    custody,
    participants,
    phenotypes,
    studies,
    withdrawals,
)

STATEMENTS = ["FUTURE_RESEARCH", "GENETIC", "COMMERCIAL"]
# code: (sex, birth year, genetic consent, withdrawn, baseline values, month 6 values)
PEOPLE = {
    "P-0001": ("female", 1980, True, False, {"ln_class": "IV", "upcr": "0.6"}, {"upcr": "0.2"}),
    "P-0002": ("female", 1990, True, False, {"ln_class": "II", "upcr": "0.3"}, {}),
    "P-0003": ("male", 1950, False, False, {"ln_class": "III", "upcr": "1.1"}, {}),
    "P-0004": ("female", 1985, True, True, {"ln_class": "III", "upcr": "0.9"}, {}),
    "P-0005": ("female", 2000, True, False, {"sledai2k": "8"}, {"ln_class": "V"}),
}


def seed_cohort(engine, admin):
    """Five participants, two visits each, one serum tube per visit (500 µL, the month 6 one
    thawed twice); P-0003 refused genetic use, P-0004 withdrew everything."""
    with uow(engine) as session:
        studies.add_study(session, actor=admin, code="SLE", title="Lupus registry")
        consent.add_document(
            session, actor=admin, code="MAIN", version="1", title="Consent",
            effective_on=date(2015, 1, 1), statements=STATEMENTS,
        )  # fmt: skip
        for number, (code, person) in enumerate(PEOPLE.items(), start=1):
            sex, born, genetic, _, baseline, month6 = person
            participants.add_participant(
                session, actor=admin, study="SLE", code=code, sex=sex, birth_year=born,
                mrn=f"MRN{number:06d}", family_name=f"Family{number}", given_name="Given",
                date_of_birth=date(born, 5, 17),
            )  # fmt: skip
            for label, day, values in (
                ("baseline", date(2020, 3, 1), baseline),
                ("month 6", date(2020, 9, 1), month6),
            ):
                participants.add_visit(
                    session, actor=admin, participant=code, label=label, visit_date=day
                )
                for variable, value in values.items():
                    phenotypes.set_value(
                        session, actor=admin, participant=code, variable=variable,
                        value=value, visit=label,
                    )  # fmt: skip
                tube = accession_tube(
                    session, admin, code, visit=label,
                    collected_at=datetime(day.year, day.month, day.day, 9, 0).astimezone(),
                )  # fmt: skip
                if label == "month 6":
                    for _ in range(2):
                        custody.record_thaw(session, actor=admin, accession=tube.accession_id)
            consent.record_consent(
                session, actor=admin, participant=code, document="MAIN", version="1",
                signed_on=date(2020, 3, 1),
                answers={"FUTURE_RESEARCH": True, "GENETIC": genetic, "COMMERCIAL": False},
            )  # fmt: skip
        withdrawals.withdraw(
            session, actor=admin, participant="P-0004", withdrawn_on=date(2021, 1, 1),
            requested_by="participant", disposition="keep_no_use",
        )  # fmt: skip
    return engine
