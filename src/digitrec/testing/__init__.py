"""digitrec.testing."""
