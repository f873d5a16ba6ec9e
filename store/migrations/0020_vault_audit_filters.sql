-- 0020_vault_audit_filters: the console filters the vault's audit log by
-- user and by time; newest first within each.

CREATE INDEX vault_audit_user ON vault_audit (user, id);
CREATE INDEX vault_audit_at ON vault_audit (at);
