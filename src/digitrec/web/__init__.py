"""The web app: one offline page and a JSON API over :mod:`digitrec.recognize` and
:mod:`digitrec.samples`. Build it with :func:`digitrec.web.app.create_app`."""
