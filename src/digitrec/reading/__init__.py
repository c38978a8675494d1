"""digitrec.reading."""
