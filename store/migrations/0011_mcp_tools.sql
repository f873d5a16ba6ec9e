-- 0011_mcp_tools: each tool of a configured MCP server as last seen (its
-- hash over name, description and input schema) and the hash the operator
-- approved: the first one seen, or the one last approved with `talon mcp
-- approve`. A tool whose hash differs from its approved one is disabled.

CREATE TABLE mcp_tools (
    server      TEXT    NOT NULL,
    tool        TEXT    NOT NULL,
    hash        TEXT    NOT NULL,
    approved    TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    read_only   INTEGER NOT NULL DEFAULT 0,
    seen_at     INTEGER NOT NULL,
    PRIMARY KEY (server, tool)
) WITHOUT ROWID;
