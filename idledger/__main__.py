"""`python -m idledger`: the same entry point as the `idledger` command."""

from idledger.cli import app

app(prog_name="idledger")
