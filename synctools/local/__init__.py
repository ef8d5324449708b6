"""A local model of the AWS hops in front of the sync Lambda, driven by the generated artifacts.

    DynamoDB stream record --patterns--> filter --transform--> SQS message --fifo--> queue
        --poller--> handler(event, context) --runtime.apply--> database

Each module owns one hop and cites the rule it follows in reference/aws-pipeline-facts.md:
`patterns` (Pipes filtering, AWS: eb-pipes-event-filtering), `transform` (the input transformer and the dynamic
SQS target parameters, AWS: eb-pipes-input-transformation, API_PipeTargetSqsQueueParameters), `fifo` (an SQS FIFO queue and its DLQ on a virtual
clock, AWS: FIFO-queues), `poller` (the Lambda SQS event source mapping, AWS: services-sqs-parameters). `replay` and
`sample` are the command-line tools built on them (`ddb-sql-sync replay|sample`, their
commands in synctools/local/commands/).

The Lambda never imports this package (runtime.handler stays light), and this package never
imports `generator`: it reads only build/ (registry.json, filters.json, input-template.txt).
"""

from __future__ import annotations
