"""digitrec.evaluation."""
