package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/open-balena-builder/builder/platform/sqlstore"
)

// SQL is the Store in the builder's database (SQLite or PostgreSQL).
type SQL struct{ db *sqlstore.DB }

// New returns the Store kept in db.
func New(db *sqlstore.DB) *SQL { return &SQL{db: db} }

func (s *SQL) q(query string) string { return s.db.Q(query) }

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Save implements Store.
func (s *SQL) Save(ctx context.Context, b Build) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO obb_builds (build_id, owner, fleet, created, finished, view) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (build_id) DO UPDATE SET owner = excluded.owner, fleet = excluded.fleet, finished = excluded.finished, view = excluded.view`),
		b.ID, b.Owner, b.Fleet, nanos(b.Created), nanos(b.Finished), b.View)
	if err != nil {
		return fmt.Errorf("journal: save build %s: %w", b.ID, err)
	}
	return nil
}

const columns = `build_id, owner, fleet, created, finished, view`

func scanBuilds(rows *sql.Rows) ([]Build, error) {
	defer rows.Close()
	var out []Build
	for rows.Next() {
		var b Build
		var created, finished int64
		if err := rows.Scan(&b.ID, &b.Owner, &b.Fleet, &created, &finished, &b.View); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		b.Created, b.Finished = fromNanos(created), fromNanos(finished)
		out = append(out, b)
	}
	return out, rows.Err()
}

// Get implements Store.
func (s *SQL) Get(ctx context.Context, id string) (Build, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+columns+` FROM obb_builds WHERE build_id = ?`), id)
	if err != nil {
		return Build{}, fmt.Errorf("journal: %w", err)
	}
	bs, err := scanBuilds(rows)
	if err != nil {
		return Build{}, err
	}
	if len(bs) == 0 {
		return Build{}, ErrNotFound
	}
	return bs[0], nil
}

// List implements Store.
func (s *SQL) List(ctx context.Context, limit int) ([]Build, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+columns+` FROM obb_builds ORDER BY created DESC, build_id DESC LIMIT ?`), limit)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return scanBuilds(rows)
}

// Unfinished implements Store.
func (s *SQL) Unfinished(ctx context.Context, owner string) ([]Build, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+columns+` FROM obb_builds WHERE owner = ? AND finished = 0 ORDER BY created`), owner)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return scanBuilds(rows)
}

// Claim implements Store.
func (s *SQL) Claim(ctx context.Context, id, from, to string) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE obb_builds SET owner = ? WHERE build_id = ? AND owner = ? AND finished = 0`), to, id, from)
	if err != nil {
		return false, fmt.Errorf("journal: take over build %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Append implements Store.
func (s *SQL) Append(ctx context.Context, id string, events []Event) error {
	const batch = 200
	for len(events) > 0 {
		n := min(len(events), batch)
		args := make([]any, 0, 3*n)
		for _, e := range events[:n] {
			args = append(args, id, e.Seq, e.Data)
		}
		q := `INSERT INTO obb_build_events (build_id, seq, event) VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?, ?),", n), ",") +
			` ON CONFLICT (build_id, seq) DO NOTHING`
		if _, err := s.db.ExecContext(ctx, s.q(q), args...); err != nil {
			return fmt.Errorf("journal: append to build %s: %w", id, err)
		}
		events = events[n:]
	}
	return nil
}

// Events implements Store.
func (s *SQL) Events(ctx context.Context, id string, after int64, limit int) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT seq, event FROM obb_build_events WHERE build_id = ? AND seq > ? ORDER BY seq LIMIT ?`), id, after, limit)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.Seq, &e.Data); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// RequestCancel implements Store.
func (s *SQL) RequestCancel(ctx context.Context, id, reason string) (bool, error) {
	if reason == "" {
		return false, errors.New("journal: a cancel request needs a reason")
	}
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE obb_builds SET cancel_reason = ? WHERE build_id = ? AND finished = 0 AND cancel_reason = ''`), reason, id)
	if err != nil {
		return false, fmt.Errorf("journal: cancel build %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	// Asked already: still a yes while it runs.
	var finished int64
	err = s.db.QueryRowContext(ctx, s.q(`SELECT finished FROM obb_builds WHERE build_id = ?`), id).Scan(&finished)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return false, fmt.Errorf("journal: %w", err)
	}
	return finished == 0, nil
}

// CancelRequests implements Store.
func (s *SQL) CancelRequests(ctx context.Context, owner string) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT build_id, cancel_reason FROM obb_builds WHERE owner = ? AND finished = 0 AND cancel_reason <> ''`), owner)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, why string
		if err := rows.Scan(&id, &why); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		out[id] = why
	}
	return out, rows.Err()
}

// Prune implements Store.
func (s *SQL) Prune(ctx context.Context, keep int) (int, error) {
	var cutoff int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT created FROM obb_builds ORDER BY created DESC LIMIT 1 OFFSET ?`), keep).Scan(&cutoff)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("journal: prune: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("journal: prune: %w", err)
	}
	defer tx.Rollback()
	old := `SELECT build_id FROM obb_builds WHERE finished <> 0 AND created <= ?`
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM obb_build_events WHERE build_id IN (`+old+`)`), cutoff); err != nil {
		return 0, fmt.Errorf("journal: prune: %w", err)
	}
	res, err := tx.ExecContext(ctx, s.q(`DELETE FROM obb_builds WHERE finished <> 0 AND created <= ?`), cutoff)
	if err != nil {
		return 0, fmt.Errorf("journal: prune: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), tx.Commit()
}
