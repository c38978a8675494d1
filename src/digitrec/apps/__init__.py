"""digitrec.apps."""
