-- Look-ups that run once per message or request found their rows by
-- scanning tables that grow with the archive's history: a storage
-- commitment by its transaction, an MPPS's worklist item by its step or
-- study, an order's unscheduled performed steps, an order status change
-- by its filler number, a merge's reports; and the rows that refer to a
-- worklist item, which SQLite's foreign-key check looks for whenever an
-- item changes. Each gets the index it needs.
CREATE INDEX commitments_transaction ON commitments (transaction_uid);
CREATE INDEX worklist_items_step ON worklist_items (scheduled_step_id);
CREATE INDEX worklist_items_study ON worklist_items (study_instance_uid);
CREATE INDEX worklist_items_filler ON worklist_items (filler_order);
CREATE INDEX performed_steps_step ON performed_steps (scheduled_step_id);
CREATE INDEX reports_patient ON reports (patient_id);
CREATE INDEX object_tombstones_unreferenced ON object_tombstones (unreferenced_at);
CREATE INDEX performed_steps_item ON performed_steps (worklist_item_fk);
CREATE INDEX worklist_conflicts_item ON worklist_conflicts (worklist_item_fk);
