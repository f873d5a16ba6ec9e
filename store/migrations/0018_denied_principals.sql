-- 0018_denied_principals: people an operator turned away (talon user deny,
-- or the console's Users page). The runtime refuses their messages without
-- calling the model; each change lands in the console's audit log.

CREATE TABLE denied_principals (
    platform  TEXT    NOT NULL,
    workspace TEXT    NOT NULL DEFAULT '',
    user      TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    by        TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (platform, workspace, user)
) WITHOUT ROWID;
