"""Activity timeouts and retry policies, one place for all workflows."""
from datetime import timedelta

from temporalio.common import RetryPolicy

# Database writes and order updates: retried until the database is back (outages heal).
# A short start-to-close: an attempt lost with a crashed worker is retried after 10 s, not 30.
RECORD_ACTIVITY = dict(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)),
)
# Emails and seller webhooks: retried for a day, then the case goes on without them (recorded).
NOTIFY_ACTIVITY = dict(
    start_to_close_timeout=timedelta(seconds=15),
    schedule_to_close_timeout=timedelta(days=1),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5)),
)
# Money: retried with backoff; the idempotency key and the lookup-before-create make retries safe.
MONEY_ACTIVITY = dict(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=2)),
)
