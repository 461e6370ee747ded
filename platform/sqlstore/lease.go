package sqlstore

import (
	"context"
	"fmt"
	"time"
)

// Leases are the heartbeats of the builder instances sharing the database.
// An instance whose lease expired is dead to the others: they free its host
// slots and settle its builds.
type Leases struct {
	db  *DB
	now func() time.Time
}

// NewLeases returns the leases kept in db.
func NewLeases(db *DB) *Leases { return &Leases{db: db, now: time.Now} }

// Beat renews instance's lease.
func (l *Leases) Beat(ctx context.Context, instance string) error {
	q := `INSERT INTO obb_instances (id, seen) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET seen = excluded.seen`
	if _, err := l.db.ExecContext(ctx, l.db.Q(q), instance, l.now().UnixNano()); err != nil {
		return fmt.Errorf("instance lease: %w", err)
	}
	return nil
}

// Expired lists the instances not seen for lease, but self.
func (l *Leases) Expired(ctx context.Context, self string, lease time.Duration) ([]string, error) {
	return l.ids(ctx, `SELECT id FROM obb_instances WHERE seen < ? AND id <> ? ORDER BY id`, l.now().Add(-lease).UnixNano(), self)
}

// Live lists the instances seen within lease (self included if it beat).
func (l *Leases) Live(ctx context.Context, lease time.Duration) ([]string, error) {
	return l.ids(ctx, `SELECT id FROM obb_instances WHERE seen >= ? ORDER BY id`, l.now().Add(-lease).UnixNano())
}

func (l *Leases) ids(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := l.db.QueryContext(ctx, l.db.Q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("instance leases: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Forget drops instance's lease, once what it held was settled.
func (l *Leases) Forget(ctx context.Context, instance string) error {
	_, err := l.db.ExecContext(ctx, l.db.Q(`DELETE FROM obb_instances WHERE id = ?`), instance)
	return err
}
