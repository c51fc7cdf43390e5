"""The exit codes every cscale command documents in its --help (a module of its own: the commands that
harvester.cli registers import it without importing harvester.cli, which imports them)."""

EXIT_CODES = """\b
Exit codes:
  0  success
  1  finished, but the share of quarantined records is above --max-quarantined
  2  usage error (bad option or argument)
  3  input error (a file or URL cannot be read)
  4  store error (not writable, missing bucket, corrupt or missing version)
  5  another writer kept committing first (after retries)
  6  unexpected internal error (run with -v for the traceback)"""
