package inflight

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/open-balena-builder/builder/platform/sqlstore"
)

// SQL is the Store in the builder's database (SQLite or PostgreSQL).
type SQL struct {
	db *sqlstore.DB
}

// New returns the Store kept in db (opened by sqlstore, migrations applied).
func New(db *sqlstore.DB) *SQL { return &SQL{db: db} }

// OpenSQLite opens the SQLite database at path (for tests and tools).
func OpenSQLite(ctx context.Context, path string) (*SQL, error) {
	db, err := sqlstore.OpenSQLite(ctx, path)
	if err != nil {
		return nil, err
	}
	return New(db), nil
}

// OpenPostgres opens the PostgreSQL database at url (for tests and tools).
func OpenPostgres(ctx context.Context, url string) (*SQL, error) {
	db, err := sqlstore.OpenPostgres(ctx, url)
	if err != nil {
		return nil, err
	}
	return New(db), nil
}

func (s *SQL) q(query string) string { return s.db.Q(query) }

// Begin implements Store.
func (s *SQL) Begin(ctx context.Context, r Record) error {
	ids, err := json.Marshal(r.ImageIDs)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, s.q(`INSERT INTO builds_in_flight (build_id, owner, release_id, image_ids, user_token, dir, started)
		VALUES (?, ?, ?, ?, ?, ?, ?)`), r.BuildID, r.Owner, r.ReleaseID, string(ids), r.UserToken, r.Dir, r.Started.UnixNano())
	if err != nil {
		return fmt.Errorf("in-flight store: record build %s: %w", r.BuildID, err)
	}
	return nil
}

// End implements Store.
func (s *SQL) End(ctx context.Context, buildID string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM builds_in_flight WHERE build_id = ?`), buildID); err != nil {
		return fmt.Errorf("in-flight store: forget build %s: %w", buildID, err)
	}
	return nil
}

// InFlight implements Store.
func (s *SQL) InFlight(ctx context.Context, owner string) ([]Record, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT build_id, owner, release_id, image_ids, user_token, dir, started
		FROM builds_in_flight WHERE owner = ? ORDER BY started`), owner)
	if err != nil {
		return nil, fmt.Errorf("in-flight store: %w", err)
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var r Record
		var ids string
		var started int64
		if err := rows.Scan(&r.BuildID, &r.Owner, &r.ReleaseID, &ids, &r.UserToken, &r.Dir, &started); err != nil {
			return nil, fmt.Errorf("in-flight store: %w", err)
		}
		if err := json.Unmarshal([]byte(ids), &r.ImageIDs); err != nil {
			return nil, fmt.Errorf("in-flight store: build %s: image ids: %w", r.BuildID, err)
		}
		r.Started = time.Unix(0, started)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Claim implements Store.
func (s *SQL) Claim(ctx context.Context, buildID, from, to string) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE builds_in_flight SET owner = ? WHERE build_id = ? AND owner = ?`), to, buildID, from)
	if err != nil {
		return false, fmt.Errorf("in-flight store: take over build %s: %w", buildID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Close implements Store.
func (s *SQL) Close() error { return s.db.Close() }
