"""The ``lmdbshard`` command line and its subcommands, and the pictures they draw."""
