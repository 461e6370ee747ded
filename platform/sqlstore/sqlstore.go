// Package sqlstore opens the builder's database: SQLite in the data dir by
// default (modernc.org/sqlite, pure Go), PostgreSQL when OBB_DATABASE_URL
// names one (pgx), so that several builders share one. It applies the
// schema's migrations at open, each once, and writes queries with `?`
// placeholders for either.
//
// The tables belong to the services that use them (ingest: builds in
// flight, build views and their events; scheduler: hosts and slots; both:
// instance leases); the schema is one list so that its version is one
// number.
package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // pure Go, no cgo
)

// DB is an open database of either kind.
type DB struct {
	*sql.DB
	// Postgres says the database is PostgreSQL (else SQLite).
	Postgres bool
	// Shared says other builders may use the database at the same time
	// (PostgreSQL): they must poll it for what they did.
	Shared bool
}

// OpenSQLite opens (creating it 0600 if needed) the database at path and
// applies the migrations it lacks.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	f.Close()
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; the writes are tiny
	d := &DB{DB: db}
	// Processes of one builder (services run separately) open the file at
	// once; switching a new file to WAL can answer SQLITE_BUSY at once,
	// whatever busy_timeout says. Such a start waits its turn.
	for wait := 20 * time.Millisecond; ; wait *= 2 {
		err = d.migrateSQLite(ctx)
		if err == nil || !busy(err) || wait > 5*time.Second {
			break
		}
		db.Close()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("database %s: %w", path, ctx.Err())
		case <-time.After(wait):
		}
		if db, err = sql.Open("sqlite", dsn); err != nil {
			return nil, fmt.Errorf("database %s: %w", path, err)
		}
		db.SetMaxOpenConns(1)
		d.DB = db
	}
	if err != nil {
		d.DB.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	return d, nil
}

// busy tells an SQLite "database is locked" (SQLITE_BUSY).
func busy(err error) bool {
	return strings.Contains(err.Error(), "SQLITE_BUSY") || strings.Contains(err.Error(), "database is locked")
}

// OpenPostgres connects to url and applies the migrations it lacks.
func OpenPostgres(ctx context.Context, url string) (*DB, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("database (OBB_DATABASE_URL): %w", err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(5 * time.Minute)
	d := &DB{DB: db, Postgres: true, Shared: true}
	if err := d.migratePostgres(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database (OBB_DATABASE_URL): %w", err)
	}
	return d, nil
}

// Open opens PostgreSQL when url is set, else SQLite at <dataDir>/obb.db.
func Open(ctx context.Context, dataDir, url string) (*DB, error) {
	if url != "" {
		return OpenPostgres(ctx, url)
	}
	return OpenSQLite(ctx, filepath.Join(dataDir, "obb.db"))
}

// Q writes query's ? placeholders as the database wants them ($n for
// PostgreSQL).
func (d *DB) Q(query string) string {
	if !d.Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Blob is the column type of bytes in the database.
func (d *DB) Blob() string {
	if d.Postgres {
		return "BYTEA"
	}
	return "BLOB"
}
