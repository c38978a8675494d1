"""digitrec.persistence."""
