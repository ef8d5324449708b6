"""The tools beside the sync Lambda: the local model of the AWS hops (replay, sample, mapping
tests) and the operator tools against AWS. They use the Lambda's code (runtime/) and the
generator's; neither imports them."""
