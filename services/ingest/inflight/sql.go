package inflight

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// sqlStore is the Store both databases share; only the placeholders differ
// (? for SQLite, $n for PostgreSQL).
type sqlStore struct {
	db     *sql.DB
	dollar bool
}

// q writes query's ? placeholders as the database wants them.
func (s *sqlStore) q(query string) string {
	if !s.dollar {
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

// Begin implements Store.
func (s *sqlStore) Begin(ctx context.Context, r Record) error {
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
func (s *sqlStore) End(ctx context.Context, buildID string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM builds_in_flight WHERE build_id = ?`), buildID); err != nil {
		return fmt.Errorf("in-flight store: forget build %s: %w", buildID, err)
	}
	return nil
}

// InFlight implements Store.
func (s *sqlStore) InFlight(ctx context.Context, owner string) ([]Record, error) {
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

// Close implements Store.
func (s *sqlStore) Close() error { return s.db.Close() }
