"""digitrec.nets."""
