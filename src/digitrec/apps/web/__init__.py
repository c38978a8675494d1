"""The web app: one offline page and a JSON API over :mod:`digitrec.reading.recognize` and
:mod:`digitrec.persistence.sample_db`. Build it with :func:`digitrec.apps.web.app.create_app`."""
