"""The outbox: messages to API clients (the hotline) written in the transaction of the change they
report, then delivered, signed, with retries."""
