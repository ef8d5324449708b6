"""The tools beside the sync Lambda: the local model of the AWS hops (`local`: replay, sample,
and what the generator's mapping tests run), the operator tools against AWS (`aws`: pump,
consume, dlq), and `local.build`, the one loader of an entity's Pipe from build/.

Layers (tests/test_layers.py): the generator may import this package and the runtime; this
package imports the runtime, never the generator (it meets it only through the files in
build/); the runtime imports neither. Inside, `aws` builds on `local`, never the reverse.
The commands are registered on the one command line, `ddb-sql-sync` (generator/cli.py)."""
