"""The AWS tools' commands of `ddb-sql-sync` (registered by generator/cli.py): `pump`, `consume`
and `dlq list|show|redrive`, one module each, exposing `add_parser(subcommands)` and
`run(args)`; `options` holds what they share (the AWS options, the exit codes, the error
report). boto3 and the runtime load only when a command runs."""
