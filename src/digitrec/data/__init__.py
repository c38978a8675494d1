"""digitrec.data."""
