-- ordonum on PostgreSQL, schema version 1 (applied by ordonum.service.pg.migrate).
--
-- Prescription lines are `json`, not `jsonb`: json keeps the text as written, so the
-- documents keep the key order of the embedded store's documents.
--
-- Layout: every table that hangs off a prescription has the prescription ID (rx_id) as the
-- first column of its primary key, so that under Citus all of them are distributed on
-- rx_id and co-located (SELECT create_distributed_table('prescriptions', 'id') and
-- ('dispensations', 'rx_id', colocate_with => 'prescriptions'), ...): a dispensation's
-- transaction then touches one shard group. On plain PostgreSQL the prescriptions table is
-- hash-partitioned by ID into 16 partitions: the same split, on one server.
--
-- IDs are the canonical text form (XXXX-XXXX-XXXX-XXXX-C); in the "C" collation they sort
-- in creation order, which the patient index relies on. Times are Unix milliseconds.
-- The immutable content is written once at creation (columns up to `lines`); the mutable
-- state is `remaining` (per line, what may still be dispensed), `dispensation_count`,
-- `cancelled_at_ms` and `consent`.

CREATE TABLE prescriptions (
    id                  text COLLATE "C" NOT NULL,
    created_at_ms       bigint NOT NULL,
    valid_until_ms      bigint NOT NULL,
    code_digest         bytea NOT NULL,           -- SHA-256 of the access code's 16 bytes
    prescriber_rpps     text NOT NULL,
    patient_nir         text COLLATE "C" NOT NULL,
    patient_name        text NOT NULL,
    birth_date          text NOT NULL,
    lines               json NOT NULL,            -- [{label, cip13, dosage, quantity, renewals, substitutable}]
    remaining           integer[] NOT NULL,       -- per line: quantity x (1 + renewals) - dispensed
    dispensation_count  integer NOT NULL DEFAULT 0,
    cancelled_at_ms     bigint,
    consent             boolean NOT NULL,
    PRIMARY KEY (id),
    CHECK (0 <= ALL (remaining))
) PARTITION BY HASH (id);

DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE prescriptions_p%s PARTITION OF prescriptions '
            'FOR VALUES WITH (MODULUS 16, REMAINDER %s)', lpad(i::text, 2, '0'), i);
    END LOOP;
END $$;

-- The patient index: a patient's prescriptions, newest first.
CREATE INDEX prescriptions_by_patient ON prescriptions (patient_nir, id DESC);

-- Dispensations, numbered 1, 2, ... per prescription (the dispensation ID is "ID/n").
-- An idempotency key is unique per prescription; `remaining_after` is what the first
-- answer said, so a replay answers the same without recomputing history.
CREATE TABLE dispensations (
    rx_id            text COLLATE "C" NOT NULL,
    n                integer NOT NULL,
    idempotency_key  text NOT NULL,
    at_ms            bigint NOT NULL,
    pharmacy_finess  text NOT NULL,
    pharmacist_rpps  text NOT NULL,
    lines            json NOT NULL,               -- as rendered: [{line, quantity, cip13, intervention}]
    remaining_after  integer[] NOT NULL,
    PRIMARY KEY (rx_id, n),
    UNIQUE (rx_id, idempotency_key)
);

-- Who read the prescription (every pharmacy scan), for its patient.
CREATE TABLE access_log (
    rx_id   text COLLATE "C" NOT NULL,
    seq     bigint GENERATED ALWAYS AS IDENTITY,
    at_ms   bigint NOT NULL,
    actor   text NOT NULL,
    PRIMARY KEY (rx_id, seq)
);

-- The QR token text of each prescription, to draw its QR code again (as sensitive as the
-- printed codes: grant it separately if the database has other readers).
CREATE TABLE qr_tokens (
    rx_id  text COLLATE "C" NOT NULL PRIMARY KEY,
    token  text NOT NULL
);

-- ID generator nodes: each service process leases a fresh node number at start-up, so two
-- processes never make the same ID. Numbers are never reused (4,194,302 process starts).
CREATE SEQUENCE id_nodes AS integer MINVALUE 2 MAXVALUE 4194302 NO CYCLE;
CREATE TABLE node_leases (
    node        integer PRIMARY KEY,
    leased_at   timestamptz NOT NULL DEFAULT now(),
    host        text NOT NULL,
    pid         integer NOT NULL
);

-- Manual entry lockout (wrong access codes per typed ID), shared by every process.
CREATE TABLE manual_lockouts (
    id_key        text COLLATE "C" NOT NULL PRIMARY KEY,
    failures      bigint[] NOT NULL DEFAULT '{}',  -- recent failure times, ms
    locked_until  bigint NOT NULL DEFAULT 0
);
