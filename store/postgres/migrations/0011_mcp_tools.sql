-- 0011_mcp_tools: each tool of a configured MCP server as last seen and the
-- hash the operator approved.

CREATE TABLE mcp_tools (
    server      TEXT    NOT NULL,
    tool        TEXT    NOT NULL,
    hash        TEXT    NOT NULL,
    approved    TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    read_only   BOOLEAN NOT NULL DEFAULT FALSE,
    seen_at     BIGINT  NOT NULL,
    PRIMARY KEY (server, tool)
);
