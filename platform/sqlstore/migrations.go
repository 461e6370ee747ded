package sqlstore

import (
	"context"
	"fmt"
	"strings"
)

// migrations are applied in order, each once; {{BLOB}} and {{INT}} become
// the database's types. Never edit one that shipped: append.
var migrations = []string{
	// 1: ingest's builds in flight (restart recovery).
	`CREATE TABLE builds_in_flight (
		build_id   TEXT PRIMARY KEY,
		owner      TEXT NOT NULL,
		release_id {{INT}} NOT NULL,
		image_ids  TEXT NOT NULL,
		user_token TEXT NOT NULL,
		dir        TEXT NOT NULL,
		started    {{INT}} NOT NULL
	)`,
	// 2: instance leases (heartbeats of the builders sharing the database).
	`CREATE TABLE obb_instances (
		id   TEXT PRIMARY KEY,
		seen {{INT}} NOT NULL
	)`,
	// 3: hosts (drain marks, slots in use across instances) and slots.
	`CREATE TABLE obb_hosts (
		name           TEXT PRIMARY KEY,
		max_concurrent INTEGER NOT NULL,
		running        INTEGER NOT NULL DEFAULT 0,
		draining       INTEGER NOT NULL DEFAULT 0
	)`,
	`CREATE TABLE obb_slots (
		job_id   TEXT PRIMARY KEY,
		host     TEXT NOT NULL,
		instance TEXT NOT NULL,
		taken    {{INT}} NOT NULL
	)`,
	`CREATE INDEX obb_slots_instance ON obb_slots (instance)`,
	// The host that built a fleet's service last (cache affinity).
	`CREATE TABLE obb_affinity (
		key  TEXT PRIMARY KEY,
		host TEXT NOT NULL
	)`,
	// 4: builds as any instance shows them, and their events (the log).
	`CREATE TABLE obb_builds (
		build_id      TEXT PRIMARY KEY,
		owner         TEXT NOT NULL,
		fleet         TEXT NOT NULL,
		created       {{INT}} NOT NULL,
		finished      {{INT}} NOT NULL DEFAULT 0,
		view          {{BLOB}} NOT NULL,
		cancel_reason TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE INDEX obb_builds_created ON obb_builds (created)`,
	`CREATE TABLE obb_build_events (
		build_id TEXT NOT NULL,
		seq      {{INT}} NOT NULL,
		event    {{BLOB}} NOT NULL,
		PRIMARY KEY (build_id, seq)
	)`,
}

func (d *DB) migration(i int) string {
	intType := "INTEGER"
	if d.Postgres {
		intType = "BIGINT"
	}
	return strings.NewReplacer("{{BLOB}}", d.Blob(), "{{INT}}", intType).Replace(migrations[i])
}

// SchemaVersion is the number of migrations this obb knows.
func SchemaVersion() int { return len(migrations) }

// migrateSQLite applies the missing migrations in one IMMEDIATE
// transaction: processes of one builder sharing the data dir (services run
// separately) start at once, and the second waits (busy_timeout) and then
// finds the schema current.
func (d *DB) migrateSQLite(ctx context.Context) error {
	conn, err := d.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
		}
	}()
	var version int
	if err := conn.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this obb knows (%d): an older obb on a newer data dir", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if _, err := conn.ExecContext(ctx, d.migration(i)); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(migrations))); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, `COMMIT`); err != nil {
		return err
	}
	done = true
	return nil
}

// migrationLock is the advisory lock id taken while migrating PostgreSQL
// (several builders may start at once against one database).
const migrationLock = 0x6f6262 // "obb"

func (d *DB) migratePostgres(ctx context.Context) error {
	conn, err := d.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock)
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS obb_schema_migrations (version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	var version int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM obb_schema_migrations`).Scan(&version); err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this obb knows (%d): an older obb on a newer database", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, d.migration(i)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO obb_schema_migrations (version) VALUES ($1)`, i+1); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}
