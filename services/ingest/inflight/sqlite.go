package inflight

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // pure Go, no cgo
)

// migrations are applied in order, each once; their index+1 is the schema
// version recorded in PRAGMA user_version.
var migrations = []string{
	`CREATE TABLE builds_in_flight (
		build_id   TEXT PRIMARY KEY,
		owner      TEXT NOT NULL,
		release_id INTEGER NOT NULL,
		image_ids  TEXT NOT NULL,
		user_token TEXT NOT NULL,
		dir        TEXT NOT NULL,
		started    INTEGER NOT NULL
	)`,
}

// SQLite is a Store in one SQLite file (WAL).
type SQLite struct{ sqlStore }

// OpenSQLite opens (creating it 0600 if needed) the database at path and
// applies the migrations it lacks.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("in-flight store: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("in-flight store: %w", err)
	}
	f.Close()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return nil, fmt.Errorf("in-flight store %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; the writes are tiny
	s := &SQLite{sqlStore{db: db}}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("in-flight store %s: %w", path, err)
	}
	return s, nil
}

func (s *SQLite) migrate(ctx context.Context) error {
	var version int
	if err := s.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this obb knows (%d): an older obb on a newer data dir", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}
