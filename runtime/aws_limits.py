"""Every AWS limit this project relies on, each defined once: the runtime, the generator's
checks, the local model of Pipes and SQS and the operator tools import them from here (and a
test holds the JSON Schemas' bounds to them). Each names the AWS documentation page that
states it (synctools.awsdocs)."""

from __future__ import annotations

# --- DynamoDB (awsdocs.DYNAMODB_STREAMS; the Developer Guide's data types and quotas pages) ----
DYNAMODB_NUMBER_DIGITS = 38  # significant digits of a number
DYNAMODB_NUMBER_MAX_EXPONENT = 125  # magnitudes up to 9.99...E+125 (Decimal.adjusted() <= 125)
DYNAMODB_NUMBER_MIN_EXPONENT = -130  # and down to 1E-130
DYNAMODB_NESTING_DEPTH = 32  # maps and lists nest at most this deep
DYNAMODB_SEQUENCE_NUMBER_DIGITS = 40  # a stream record's SequenceNumber: 21 to 40 digits
DYNAMODB_STREAM_READERS_PER_SHARD = 2  # more readers of one shard are throttled
DYNAMODB_GET_RECORDS_MAX = 1000  # records one GetRecords call returns at most
DYNAMODB_STREAM_RETENTION_SECONDS = 86_400  # a stream keeps a record 24 hours
DYNAMODB_ITEM_BYTES = 409_600  # an item, attribute names and values together (400 KB)

# --- EventBridge Pipes (awsdocs.PIPES_INPUT_TRANSFORM, PIPES_FILTERING, PIPES_SQS_TARGET) -------
PIPES_TEMPLATE_CHARS = 8192  # an input template
PIPES_PATTERN_CHARS = 4096  # one filter pattern
PIPES_FILTERS = 5  # filter patterns of one Pipe
PIPES_DYNAMIC_PARAMETER_CHARS = 100  # MessageGroupId / MessageDeduplicationId of an SQS target
PIPES_NAME_CHARS = 64  # a Pipe's name
PIPES_POLLS_PER_SECOND = 4  # a Pipe polls each stream shard this often
# A stream source's MaximumRecordAgeInSeconds (-1: no limit) and MaximumRetryAttempts (-1: no
# limit) (awsdocs.PIPES_DYNAMODB_PARAMETERS)
PIPES_RECORD_AGE_MIN, PIPES_RECORD_AGE_MAX = 60, 604_800
PIPES_RETRY_ATTEMPTS_MAX = 10_000
PIPES_BATCHING_WINDOW_MAX = 300  # MaximumBatchingWindowInSeconds of a stream source
PIPES_PARALLELIZATION_MAX = 10  # ParallelizationFactor: concurrent batches per shard

# --- SQS (awsdocs.SQS_FIFO, SQS_FIFO_QUOTAS, SQS_DEDUPLICATION) --------------------------------
SQS_BATCH = 10  # entries of SendMessageBatch, messages of one ReceiveMessage
SQS_MESSAGE_BYTES = 1_048_576  # a message body (262,144 before August 2025; a queue may set less)
SQS_ID_CHARS = 128  # MessageGroupId / MessageDeduplicationId
SQS_QUEUE_NAME_CHARS = 80  # a queue's name, the .fifo suffix included
SQS_DEDUP_WINDOW_SECONDS = 300  # a deduplication id is remembered this long
SQS_VISIBILITY_TIMEOUT_MAX = 43_200  # a queue's or a message's visibility timeout (12 hours)
SQS_RETENTION_MIN, SQS_RETENTION_MAX = 60, 1_209_600  # a queue's message retention (14 days)
SQS_MAX_RECEIVE_COUNT_MAX = 1000  # a redrive policy's maxReceiveCount
# A FIFO queue without high throughput: calls per second per API action (SendMessage[Batch],
# ReceiveMessage, DeleteMessage[Batch]); awsdocs.SQS_FIFO_THROTTLING
SQS_FIFO_CALLS_PER_SECOND = 300

# --- Lambda and its SQS event source mapping (awsdocs.LAMBDA_SQS_PARAMETERS, LAMBDA_SQS_CONFIGURE)
LAMBDA_FIFO_BATCH = 10  # messages of one batch from a FIFO queue
LAMBDA_CONCURRENCY_MIN, LAMBDA_CONCURRENCY_MAX = 2, 1000  # ScalingConfig.MaximumConcurrency
LAMBDA_VISIBILITY_FACTOR = 6  # AWS's advice: visibility timeout >= 6x the function timeout
LAMBDA_MAX_RECEIVE_ADVICE = 5  # AWS's advice: maxReceiveCount >= 5 with partial batch responses
LAMBDA_BATCHING_WINDOW_MAX = 300  # MaximumBatchingWindowInSeconds of an SQS event source mapping
LAMBDA_TIMEOUT_MAX = 900  # a function's timeout (15 minutes)
LAMBDA_MEMORY_MIN, LAMBDA_MEMORY_MAX = 128, 10_240  # a function's memory in MB
LAMBDA_ZIP_DIRECT_UPLOAD_BYTES = 50 * 1024 * 1024  # a zip uploaded directly (not through S3)
LAMBDA_UNZIPPED_BYTES = 250 * 1024 * 1024  # a function's code, unzipped

# --- RDS (the User Guide's IAM database authentication and RDS Proxy pages) --------------------
RDS_IAM_TOKEN_SECONDS = 900  # an IAM authentication token is accepted for 15 minutes
# RDS Proxy pins a client connection to its database connection on any statement whose text
# is longer than 16 KB ("Avoiding pinning an RDS Proxy"); read as 16,000 bytes, the smaller
RDS_PROXY_STATEMENT_BYTES = 16_000

# --- CloudWatch (the PutMetricAlarm API reference: EvaluationPeriods x Period is at most one day) ---
CLOUDWATCH_ALARM_MINUTES_MAX = 1440  # one-minute periods an alarm evaluates at most
