-- paycore schema for PostgreSQL, version 2: uploaded batch files in the database, so that any
-- process can validate a batch whichever process took its upload in (store::files).
-- A file is a row of `batch_files` and its content numbered chunks of about 1 MiB; it is
-- readable once `finished_at` is set. A file left unfinished (its upload broke off with the
-- process) is never read, and is removed a day later by the next start.

CREATE TABLE batch_files (
    name        TEXT PRIMARY KEY,                  -- `batches/<name>`, as `batches.file` holds it
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,                       -- NULL while written
    size        BIGINT,                            -- bytes, once finished
    chunks      INTEGER                            -- rows in batch_file_chunks, once finished
);

CREATE TABLE batch_file_chunks (
    name TEXT NOT NULL REFERENCES batch_files (name) ON DELETE CASCADE,
    seq  INTEGER NOT NULL,                         -- 0, 1, 2, … in file order
    data BYTEA NOT NULL,
    PRIMARY KEY (name, seq)
);
-- Stored out of line without compression: written once, read once, at the speed of a copy.
ALTER TABLE batch_file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
