"""The technicians' terminal UI (Textual), a thin front end over `biobank.services`."""
