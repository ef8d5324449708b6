"""Operator tools against real AWS APIs (or an emulator such as moto or LocalStack):

- `pump`: reads a DynamoDB stream and does what the EventBridge Pipe does with the generated
  artifacts (filter, input template, group and deduplication ids, SendMessageBatch), for
  where Pipes does not run;
- `consume`: polls the FIFO queue the way the Lambda event source mapping does and applies
  each batch with the sync runtime;
- `dlq`: lists, explains and redrives the FIFO DLQ and the Pipe's DLQ.

boto3 is imported here freely: the Lambda (`runtime.handler`) never imports this package.
"""
