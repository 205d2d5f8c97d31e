"""The inventory commands as a technician and an admin would type them."""

import json


def test_freezer_accession_aliquots_and_custody(demo_cli):
    freezer = demo_cli(
        "-u", "admin", "storage", "add", "freezer", "-80 #3", "--shelves", "5",
        "--racks-per-shelf", "4", "--boxes-per-rack", "12", "--box", "9x9",
    ).stdout.strip()  # fmt: skip
    tree = demo_cli("-u", "tech", "storage", "tree", freezer, "--json").stdout
    assert len([n for n in json.loads(tree) if n["unit"]["kind"] == "box"]) == 240
    participant = json.loads(demo_cli("-u", "tech", "participant", "list", "--json").stdout)[0][
        "code"
    ]
    demo_cli("-u", "tech", "visit", "add", participant, "month 60", "--date", "2026-01-05")
    made = demo_cli(
        "-u", "tech", "specimen", "accession", "-p", participant, "-v", "month 60",
        "--type", "SER", "--container", "SST", "-q", "1500",
        "--collected", "2026-01-05T08:00", "--processed", "2026-01-05T09:10", "--pre-temp", "RT",
        "--aliquots", "4", "--volume", "250", "--to", freezer, "--json",
    )  # fmt: skip
    tubes = json.loads(made.stdout)
    primary, aliquots = tubes[0], tubes[1:]
    assert primary["quantity"] == 500 and primary["sprec_code"].startswith("SER-SST-A-")
    assert [a["position"] for a in aliquots] == ["A2", "A3", "A4", "A5"]
    box = primary["box_barcode"]
    grid = demo_cli("-u", "tech", "storage", "show", box).stdout
    assert " A   ■  ■  ■  ■  ■  ·" in grid
    tube = aliquots[0]["accession_id"]
    demo_cli("-u", "tech", "specimen", "move", tube, box, "I9", "--reason", "tidy")
    demo_cli("-u", "tech", "specimen", "check-out", tube)
    demo_cli("-u", "tech", "specimen", "check-in", tube)
    demo_cli("-u", "tech", "specimen", "thaw", tube)
    shown = json.loads(demo_cli("-u", "tech", "specimen", "show", tube, "--json").stdout)
    assert shown["specimen"]["position"] == "I9" and shown["specimen"]["freeze_thaw_count"] == 1
    assert [e["event_type"] for e in shown["events"]] == [
        "aliquoted_from", "moved", "checked_out", "checked_in", "thawed",
    ]  # fmt: skip
    lineage = json.loads(demo_cli("-u", "tech", "specimen", "lineage", tube, "--json").stdout)
    assert lineage["ancestors"][0]["accession_id"] == primary["accession_id"]
    failed = demo_cli("-u", "tech", "specimen", "dispose", tube, code=2)
    assert "--reason" in failed.stderr  # a required option: the usage error names it
    refused = demo_cli("-u", "tech", "specimen", "move", tube, box, "I9", code=5)
    assert "is occupied by" in refused.stderr
    pi = demo_cli("-u", "pi", "specimen", "thaw", tube, code=3)
    assert pi.stderr.strip() == "biobank: error: pi (pi) may not move"
