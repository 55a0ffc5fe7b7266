-- Forwards confirmed by storage commitment: after the C-STORE succeeds the
-- row waits in state 'committing' under the transaction it was requested in,
-- until the destination's N-EVENT-REPORT lists it (then 'done') or as failed
-- (then 'pending' again), or until no report came in time.
ALTER TABLE forward_queue ADD COLUMN confirm_commitment BIGINT NOT NULL DEFAULT 0;
ALTER TABLE forward_queue ADD COLUMN commitment_transaction_uid TEXT;
ALTER TABLE forward_queue ADD COLUMN stored_at BIGINT;
CREATE INDEX forward_queue_transaction ON forward_queue (commitment_transaction_uid);
