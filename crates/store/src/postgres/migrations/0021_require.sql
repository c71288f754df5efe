-- A real-time batch's commit is one statement (`commit::commit_in_one_statement`): the fencing
-- update, the transfers, holds, saved responses and balances as the parts of one `WITH`, in
-- PostgreSQL's implicit transaction, one round trip where BEGIN, four statements and COMMIT
-- took five. The checks the engine made on each statement's count of rows (the epoch still
-- current, every balance's account found) must then fail the statement itself, so that every
-- part rolls back: this raises `message` with SQLSTATE `code` unless `ok`. paycore reads
-- PCF01 as fenced and PCC01 as corrupt (`codec`'s `From<postgres::Error>`).
CREATE FUNCTION paycore_require(ok boolean, code text, message text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
    END IF;
    RETURN true;
END
$$;
