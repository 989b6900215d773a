"""The workpools command line: serve, migrations, documents and the admin commands."""
