-- 0006_delivery_parts: how far the delivery of each reply went, and the
-- message that showed an answer while it was generated.

CREATE TABLE outbound_parts (
    outbound_id BIGINT NOT NULL REFERENCES outbound (id),
    n           BIGINT NOT NULL CHECK (n >= 0),
    platform_id TEXT   NOT NULL DEFAULT '',
    posted_at   BIGINT NOT NULL,
    PRIMARY KEY (outbound_id, n)
);

CREATE TABLE stream_previews (
    inbound_id  BIGINT PRIMARY KEY REFERENCES inbound (id),
    platform_id TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
