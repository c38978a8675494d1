"""digitrec.features."""
