-- The character set worklist answers to a peer are written in; empty for
-- UTF-8 (ISO_IR 192).
ALTER TABLE peers ADD COLUMN worklist_charset TEXT NOT NULL DEFAULT '';
