package inflight

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// pgMigrations are applied in order, each once, under an advisory lock
// (several builders may start at once against one database); the schema
// version is the row count of obb_schema_migrations.
var pgMigrations = []string{
	`CREATE TABLE builds_in_flight (
		build_id   TEXT PRIMARY KEY,
		owner      TEXT NOT NULL,
		release_id BIGINT NOT NULL,
		image_ids  TEXT NOT NULL,
		user_token TEXT NOT NULL,
		dir        TEXT NOT NULL,
		started    BIGINT NOT NULL
	)`,
}

// pgMigrationLock is the advisory lock id taken while migrating.
const pgMigrationLock = 0x6f6262 // "obb"

// Postgres is a Store in PostgreSQL (OBB_DATABASE_URL).
type Postgres struct{ sqlStore }

// OpenPostgres connects to url and applies the migrations it lacks.
func OpenPostgres(ctx context.Context, url string) (*Postgres, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("in-flight store (OBB_DATABASE_URL): %w", err)
	}
	db.SetMaxOpenConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	s := &Postgres{sqlStore{db: db, dollar: true}}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("in-flight store (OBB_DATABASE_URL): %w", err)
	}
	return s, nil
}

func (s *Postgres) migrate(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, pgMigrationLock); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, pgMigrationLock)
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS obb_schema_migrations (version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	var version int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM obb_schema_migrations`).Scan(&version); err != nil {
		return err
	}
	if version > len(pgMigrations) {
		return fmt.Errorf("schema version %d is newer than this obb knows (%d): an older obb on a newer database", version, len(pgMigrations))
	}
	for i := version; i < len(pgMigrations); i++ {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, pgMigrations[i]); err != nil {
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
