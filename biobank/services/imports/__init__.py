"""Importing what labs kept in other systems. `common` holds what every importer shares (the
report, its faults and counts, batches, the refusal of a faulty plan); each source is a
package that reads, checks, plans and writes in modules of its own: `legacy` (a lab's
inventory sheet) and `redcap` (a REDCap project's data dictionary and records)."""
