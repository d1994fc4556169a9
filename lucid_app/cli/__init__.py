"""The command line, ``python -m lucid_app COMMAND``: the parser and dispatch (:mod:`lucid_app.cli.main`) and one
module per command."""
