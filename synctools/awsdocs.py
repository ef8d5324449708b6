"""The AWS documentation pages that messages and generated files cite, one name each: a
message says why an AWS rule applies by pointing at the page that states it."""

from __future__ import annotations

PIPES_INPUT_TRANSFORM = (
    "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-pipes-input-transformation.html"
)
PIPES_FILTERING = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-pipes-event-filtering.html"
PATTERN_OPERATORS = (
    "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html"
)
EVENT_PATTERNS = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html"
PIPES_BATCHING = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-pipes-batching-concurrency.html"
PIPES_DYNAMODB = "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-pipes-dynamodb.html"
PIPES_DYNAMODB_PARAMETERS = "https://docs.aws.amazon.com/eventbridge/latest/pipes-reference/API_PipeSourceDynamoDBStreamParameters.html"
PIPES_SQS_TARGET = (
    "https://docs.aws.amazon.com/eventbridge/latest/pipes-reference/API_PipeTargetSqsQueueParameters.html"
)
PIPES_CREATE = "https://docs.aws.amazon.com/eventbridge/latest/pipes-reference/API_CreatePipe.html"
DYNAMODB_STREAMS = "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.html"
SQS_FIFO = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues.html"
SQS_FIFO_QUOTAS = (
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-fifo.html"
)
SQS_MESSAGE_QUOTAS = (
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html"
)
SQS_FIFO_THROTTLING = (
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/"
    "troubleshooting-fifo-throttling-issues.html"
)
SQS_DEDUPLICATION = (
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/"
    "using-messagededuplicationid-property.html"
)
SQS_DEAD_LETTER_QUEUES = (
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html"
)
LAMBDA_SQS_PARAMETERS = "https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-parameters.html"
LAMBDA_SQS_CONFIGURE = "https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html"
LAMBDA_SQS_ERRORS = "https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html"
