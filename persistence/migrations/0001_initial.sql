-- raftorch schema, version 1: configuration, artifacts, plugins, tokens, event log,
-- lease history and the fenced session-state store.

CREATE TABLE adapters (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL UNIQUE
                 CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    connector    text NOT NULL CHECK (length(connector) BETWEEN 1 AND 128),
    mode         text NOT NULL CHECK (mode IN ('single', 'active_passive', 'scale_out')),
    instances    integer NOT NULL DEFAULT 1 CHECK (instances BETWEEN 1 AND 1000),
    config       jsonb NOT NULL DEFAULT '{}'::jsonb,
    artifacts    text[] NOT NULL DEFAULT '{}',
    admin_state  text NOT NULL DEFAULT 'DISABLED' CHECK (admin_state IN ('ENABLED', 'DISABLED')),
    revision     bigint NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adapters_artifacts_idx ON adapters USING gin (artifacts);

CREATE TABLE artifacts (
    name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    version      integer NOT NULL CHECK (version >= 1),
    content      bytea NOT NULL,
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    media_type   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE plugins (
    connector    text NOT NULL,
    version      text NOT NULL,
    entry_point  text NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connector, version)
);

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL UNIQUE,
    token_sha256 text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    role         text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE events (
    id           bigserial PRIMARY KEY,
    adapter_id   uuid REFERENCES adapters (id) ON DELETE CASCADE,
    time         timestamptz NOT NULL DEFAULT now(),
    level        text NOT NULL CHECK (level IN ('info', 'warning', 'error')),
    category     text NOT NULL CHECK (category IN ('connection', 'action', 'system')),
    description  text NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX events_adapter_idx ON events (adapter_id, time DESC, id DESC);

CREATE TABLE lease_history (
    id           bigserial PRIMARY KEY,
    session      text NOT NULL,
    pod_id       text NOT NULL,
    epoch        bigint NOT NULL CHECK (epoch >= 1),
    role         text NOT NULL DEFAULT 'ACTIVE' CHECK (role IN ('ACTIVE', 'STANDBY')),
    granted_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    reason       text,
    UNIQUE (session, epoch)
);
CREATE INDEX lease_history_epoch_idx ON lease_history (epoch DESC);

-- The fence: the highest epoch that has written (or claimed) each session, and who.
CREATE TABLE session_fences (
    session      text PRIMARY KEY,
    epoch        bigint NOT NULL CHECK (epoch >= 1),
    owner        text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_fences_epoch_idx ON session_fences (epoch DESC);

CREATE TABLE session_state (
    session      text NOT NULL REFERENCES session_fences (session) ON DELETE CASCADE,
    key          text NOT NULL,
    value        jsonb NOT NULL,
    epoch        bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, key)
);

-- Change feed: replicas LISTEN on raftorch_changes to learn of configuration changes.
CREATE FUNCTION raftorch_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_key text;
BEGIN
    IF TG_TABLE_NAME = 'adapters' THEN
        row_key := COALESCE(NEW.id, OLD.id)::text;
    ELSIF TG_TABLE_NAME = 'artifacts' THEN
        row_key := COALESCE(NEW.name, OLD.name);
    ELSE
        row_key := COALESCE(NEW.connector, OLD.connector);
    END IF;
    PERFORM pg_notify(
        'raftorch_changes',
        json_build_object('table', TG_TABLE_NAME, 'op', lower(TG_OP), 'key', row_key)::text
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER adapters_notify AFTER INSERT OR UPDATE OR DELETE ON adapters
    FOR EACH ROW EXECUTE FUNCTION raftorch_notify_change();
CREATE TRIGGER artifacts_notify AFTER INSERT OR UPDATE OR DELETE ON artifacts
    FOR EACH ROW EXECUTE FUNCTION raftorch_notify_change();
CREATE TRIGGER plugins_notify AFTER INSERT OR DELETE ON plugins
    FOR EACH ROW EXECUTE FUNCTION raftorch_notify_change();
