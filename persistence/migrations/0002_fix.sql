-- raftorch schema, version 2: the FIX connector's application bridge and outbound journal,
-- and reset requests that a session's owner carries out through its fenced writes.
--
-- A FIX session's sequence numbers live in session_state (keys fix.*), behind the fence.
-- "generation" counts sequence resets: MsgSeqNum starts again at 1 in each generation,
-- so (slot, generation, seq_num) names one message for the life of the adapter.

-- Applications insert outbound application messages here; the session owner sends each
-- once, setting sent_at/seq_num in the fenced transaction that reserves its MsgSeqNum.
CREATE TABLE fix_outbox (
    id           bigserial PRIMARY KEY,
    adapter_id   uuid NOT NULL REFERENCES adapters (id) ON DELETE CASCADE,
    msg_type     text NOT NULL CHECK (msg_type ~ '^[0-9A-Za-z]{1,4}$'),
    fields       jsonb NOT NULL CHECK (jsonb_typeof(fields) = 'array'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    slot         text,
    generation   integer,
    seq_num      bigint,
    epoch        bigint,
    sent_at      timestamptz,
    rejected     text,
    CHECK ((sent_at IS NULL) = (seq_num IS NULL)),
    CHECK (sent_at IS NULL OR rejected IS NULL)
);
CREATE INDEX fix_outbox_pending_idx ON fix_outbox (adapter_id, id)
    WHERE sent_at IS NULL AND rejected IS NULL;

-- Every inbound application message, written once: the same fenced transaction advances
-- the session's expected inbound MsgSeqNum.
CREATE TABLE fix_inbox (
    id           bigserial PRIMARY KEY,
    adapter_id   uuid NOT NULL REFERENCES adapters (id) ON DELETE CASCADE,
    slot         text NOT NULL,
    generation   integer NOT NULL,
    seq_num      bigint NOT NULL CHECK (seq_num >= 1),
    msg_type     text NOT NULL,
    fields       jsonb NOT NULL,
    poss_dup     boolean NOT NULL DEFAULT false,
    sending_time text NOT NULL,
    raw          bytea NOT NULL,
    epoch        bigint NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (adapter_id, slot, generation, seq_num)
);

-- What the session sent, by MsgSeqNum, so a ResendRequest can be answered by any later
-- owner. Session-level messages are journalled without a body (they are gap-filled).
CREATE TABLE fix_journal (
    slot         text NOT NULL,
    generation   integer NOT NULL,
    seq_num      bigint NOT NULL CHECK (seq_num >= 1),
    msg_type     text NOT NULL,
    body         bytea,
    sending_time text NOT NULL,
    epoch        bigint NOT NULL,
    PRIMARY KEY (slot, generation, seq_num)
);

-- The admin "reset" action for connectors that reset through their own fenced writes.
CREATE TABLE session_reset_requests (
    id           bigserial PRIMARY KEY,
    session      text NOT NULL,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    done_epoch   bigint
);
CREATE INDEX session_reset_requests_pending_idx ON session_reset_requests (session, id)
    WHERE done_at IS NULL;
