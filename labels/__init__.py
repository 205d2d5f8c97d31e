"""Label rendering and printing (QR, PDF sheets, ZPL). Knows nothing of the database: it takes
label data and renders it."""
