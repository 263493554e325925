DROP FUNCTION audit_note(text);
DROP TABLE audit_log;
