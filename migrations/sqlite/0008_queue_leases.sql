-- Several nodes may share one index. A node claims a queue item with a
-- lease before working on it, so no two nodes send the same forward or
-- report; the lease of a node that died simply expires. Finished rows are
-- purged after a retention period, hence the finish times.
ALTER TABLE forward_queue ADD COLUMN lease_owner TEXT;
ALTER TABLE forward_queue ADD COLUMN lease_until BIGINT;
CREATE INDEX forward_queue_destination ON forward_queue (state, destination_ae, next_attempt_at);
CREATE INDEX forward_queue_finished ON forward_queue (state, done_at);
ALTER TABLE commitments ADD COLUMN lease_owner TEXT;
ALTER TABLE commitments ADD COLUMN lease_until BIGINT;
ALTER TABLE commitments ADD COLUMN finished_at BIGINT;
CREATE INDEX commitments_finished ON commitments (state, finished_at);
UPDATE commitments SET finished_at = created_at WHERE state <> 'pending';
