"""CLI subcommands, one module per pipeline stage (see ``fdflare.cli``)."""
