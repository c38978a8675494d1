"""``python -m digitrec``: the same as the ``digitrec`` command."""

from digitrec.apps.cli import main

if __name__ == "__main__":
    main()
