-- circa's system of record: the rows write-behind keeps equal to the nodes'
-- state, the audit of every applied command, and the flush cursor.
--
-- Each row carries the log index of the command that last changed it;
-- write-behind only replaces a row with a newer one
-- (WHERE t.log_index < excluded.log_index), so a replayed batch changes
-- nothing. `view` is the JSON the API serves, byte for byte (json, not
-- jsonb, keeps the text); the typed columns are extracted from it for SQL
-- and constraints. Deleted resources stay as tombstones (deleted = true)
-- so loan history keeps its foreign key and a replay cannot resurrect them.

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('member', 'librarian', 'admin', 'service')),
    plan        text NOT NULL CHECK (plan IN ('standard', 'premium')),
    status      text NOT NULL CHECK (status IN ('active', 'blocked')),
    created_at  timestamptz NOT NULL,
    log_index   bigint NOT NULL CHECK (log_index > 0),
    view        json NOT NULL
);

CREATE TABLE api_keys (
    key_sha256  bytea PRIMARY KEY CHECK (length(key_sha256) = 32),
    id          uuid NOT NULL UNIQUE,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('member', 'librarian', 'admin', 'service')),
    created_at  timestamptz NOT NULL,
    log_index   bigint NOT NULL CHECK (log_index > 0),
    view        json NOT NULL
);

CREATE TABLE resources (
    id          uuid PRIMARY KEY,
    deleted     boolean NOT NULL DEFAULT false,
    title       text,
    type        text CHECK (type IN ('FICTION', 'FANTASY', 'NONFICTION', 'HISTORY', 'POETRY',
                                     'SCHOLARLY_JOURNAL', 'VIDEO', 'AUDIO')),
    copies      integer CHECK (copies >= 0),
    available   integer CHECK (available >= 0 AND available <= copies),
    premium     boolean,
    authors     text[],
    tags        text[],
    created_at  timestamptz,
    updated_at  timestamptz,
    log_index   bigint NOT NULL CHECK (log_index > 0),
    view        json,
    CHECK (deleted OR (title IS NOT NULL AND type IS NOT NULL AND copies IS NOT NULL
                       AND available IS NOT NULL AND premium IS NOT NULL
                       AND created_at IS NOT NULL AND view IS NOT NULL))
);
CREATE INDEX resources_type ON resources (type) WHERE NOT deleted;

CREATE TABLE loans (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id),
    resource_id     uuid NOT NULL REFERENCES resources (id),
    copy            integer NOT NULL CHECK (copy >= 1),
    status          text NOT NULL CHECK (status IN ('active', 'returned')),
    checked_out_at  timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,
    returned_at     timestamptz,
    renewals        integer NOT NULL CHECK (renewals >= 0),
    log_index       bigint NOT NULL CHECK (log_index > 0),
    view            json NOT NULL,
    CHECK ((status = 'returned') = (returned_at IS NOT NULL))
);
-- a copy has at most one open loan
CREATE UNIQUE INDEX loans_one_open_per_copy ON loans (resource_id, copy) WHERE status = 'active';
CREATE INDEX loans_user ON loans (user_id, checked_out_at);

CREATE TABLE holds (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id),
    resource_id  uuid NOT NULL REFERENCES resources (id),
    status       text NOT NULL CHECK (status IN ('waiting', 'ready', 'fulfilled', 'cancelled', 'expired')),
    ready_until  timestamptz,
    created_at   timestamptz NOT NULL,
    log_index    bigint NOT NULL CHECK (log_index > 0),
    view         json NOT NULL
);
-- a member has at most one open hold per resource
CREATE UNIQUE INDEX holds_one_open ON holds (user_id, resource_id)
    WHERE status IN ('waiting', 'ready');

-- every applied command, accepted or refused, in log order. `command` is
-- the encoded command as the log holds it (it includes password hashes and
-- the cluster's signing key): `circa restore --from-postgres` replays it.
CREATE TABLE commands (
    log_index   bigint PRIMARY KEY CHECK (log_index > 0),
    ts          timestamptz NOT NULL,
    type        text NOT NULL,
    actor_id    uuid,
    actor_role  text,
    status      smallint NOT NULL,
    command     bytea NOT NULL
);

-- how far write-behind got: written in the same transaction as the rows
CREATE TABLE flush_cursor (
    id             smallint PRIMARY KEY CHECK (id = 1),
    flushed_index  bigint NOT NULL CHECK (flushed_index >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO flush_cursor (id, flushed_index) VALUES (1, 0);
