"""The local tools' commands of `ddb-sql-sync` (registered by generator/cli.py): `replay` and
`sample`, one module each, exposing `add_parser(subcommands)` and `run(args)`. They import
what they run only when run, so that `ddb-sql-sync --help` stays quick."""
