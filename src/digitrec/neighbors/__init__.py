"""digitrec.neighbors."""
