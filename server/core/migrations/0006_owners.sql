-- Who created each job and upload (the principal's subject; '' before authentication
-- existed or with it off): an editor may cancel only the jobs it created.

ALTER TABLE jobs ADD COLUMN created_by text NOT NULL DEFAULT '';
ALTER TABLE uploads ADD COLUMN created_by text NOT NULL DEFAULT '';
