-- 0018_denied_principals: people an operator turned away; the runtime
-- refuses their messages without calling the model.

CREATE TABLE denied_principals (
    platform  TEXT   NOT NULL,
    workspace TEXT   NOT NULL DEFAULT '',
    "user"    TEXT   NOT NULL,
    at        BIGINT NOT NULL,
    by        TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (platform, workspace, "user")
);
