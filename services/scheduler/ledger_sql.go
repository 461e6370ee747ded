package scheduler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/open-balena-builder/builder/platform/sqlstore"
)

// SQLLedger is the Ledger in the builder's database. On PostgreSQL every
// change is one statement whose row locks keep max_concurrent across
// builders (a host's row is locked FOR UPDATE SKIP LOCKED while a slot is
// taken on it); on SQLite, which one builder owns, a transaction.
type SQLLedger struct {
	db       *sqlstore.DB
	instance string
	now      func() time.Time
}

// NewSQLLedger returns the ledger kept in db; instance names the slots this
// builder takes.
func NewSQLLedger(db *sqlstore.DB, instance string) *SQLLedger {
	return &SQLLedger{db: db, instance: instance, now: time.Now}
}

func (l *SQLLedger) q(s string) string { return l.db.Q(s) }

// Register implements Ledger.
// One statement for all of an executor's hosts (its heartbeat).
func (l *SQLLedger) Register(ctx context.Context, hosts []Slots) error {
	if len(hosts) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(hosts))
	for _, h := range hosts {
		args = append(args, h.Host, h.Max)
	}
	_, err := l.db.ExecContext(ctx, l.q(`INSERT INTO obb_hosts (name, max_concurrent) VALUES `+
		strings.TrimSuffix(strings.Repeat("(?, ?),", len(hosts)), ",")+
		` ON CONFLICT (name) DO UPDATE SET max_concurrent = excluded.max_concurrent`), args...)
	if err != nil {
		return fmt.Errorf("ledger: register %d hosts: %w", len(hosts), err)
	}
	return nil
}

// Take implements Ledger.
func (l *SQLLedger) Take(ctx context.Context, job string, hosts []string) (string, error) {
	if len(hosts) == 0 {
		return "", nil
	}
	if l.db.Postgres {
		var host string
		err := l.db.QueryRowContext(ctx, `WITH pick AS (
				SELECT name FROM obb_hosts
				WHERE name = ANY($1::text[]) AND running < max_concurrent AND draining = 0
				ORDER BY array_position($1::text[], name) LIMIT 1
				FOR UPDATE SKIP LOCKED),
			took AS (UPDATE obb_hosts h SET running = h.running + 1 FROM pick WHERE h.name = pick.name RETURNING h.name)
			INSERT INTO obb_slots (job_id, host, instance, taken) SELECT $2, name, $3, $4 FROM took RETURNING host`,
			hosts, job, l.instance, l.now().UnixNano()).Scan(&host)
		if errors.Is(err, sql.ErrNoRows) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("ledger: take a slot for %s: %w", job, err)
		}
		return host, nil
	}
	return l.takeTx(ctx, job, hosts)
}

func (l *SQLLedger) takeTx(ctx context.Context, job string, hosts []string) (string, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("ledger: %w", err)
	}
	defer tx.Rollback()
	args := make([]any, len(hosts))
	for i, h := range hosts {
		args[i] = h
	}
	rows, err := tx.QueryContext(ctx, `SELECT name FROM obb_hosts WHERE running < max_concurrent AND draining = 0 AND name IN (`+
		strings.TrimSuffix(strings.Repeat("?,", len(hosts)), ",")+`)`, args...)
	if err != nil {
		return "", fmt.Errorf("ledger: %w", err)
	}
	free := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return "", err
		}
		free[n] = true
	}
	rows.Close()
	pick := ""
	for _, h := range hosts {
		if free[h] {
			pick = h
			break
		}
	}
	if pick == "" {
		return "", nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO obb_slots (job_id, host, instance, taken) VALUES (?, ?, ?, ?)`, job, pick, l.instance, l.now().UnixNano()); err != nil {
		return "", fmt.Errorf("ledger: take a slot for %s: %w", job, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE obb_hosts SET running = running + 1 WHERE name = ?`, pick); err != nil {
		return "", fmt.Errorf("ledger: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("ledger: %w", err)
	}
	return pick, nil
}

// Give implements Ledger.
func (l *SQLLedger) Give(ctx context.Context, job string) error {
	_, err := l.free(ctx, `job_id = ?`, job)
	return err
}

// FreeInstance implements Ledger.
func (l *SQLLedger) FreeInstance(ctx context.Context, instance string) (int, error) {
	return l.free(ctx, `instance = ?`, instance)
}

// Reclaim implements Ledger.
func (l *SQLLedger) Reclaim(ctx context.Context, live []string) (int, error) {
	if len(live) == 0 {
		return l.free(ctx, `1 = 1`)
	}
	args := make([]any, len(live))
	for i, s := range live {
		args[i] = s
	}
	return l.free(ctx, `instance NOT IN (`+strings.TrimSuffix(strings.Repeat("?,", len(live)), ",")+`)`, args...)
}

// free deletes the slots where says and gives their hosts the slots back,
// as a difference (not a recount) so that a slot taken meanwhile counts.
func (l *SQLLedger) free(ctx context.Context, where string, args ...any) (int, error) {
	if l.db.Postgres {
		var n int
		err := l.db.QueryRowContext(ctx, l.q(`WITH gone AS (DELETE FROM obb_slots WHERE `+where+` RETURNING host),
			c AS (SELECT host, count(*) AS n FROM gone GROUP BY host),
			upd AS (UPDATE obb_hosts h SET running = GREATEST(h.running - c.n, 0) FROM c WHERE h.name = c.host RETURNING 1)
			SELECT COALESCE(SUM(n), 0) FROM c`), args...).Scan(&n)
		if err != nil {
			return 0, fmt.Errorf("ledger: free slots: %w", err)
		}
		return n, nil
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("ledger: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT host, count(*) FROM obb_slots WHERE `+where+` GROUP BY host`, args...)
	if err != nil {
		return 0, fmt.Errorf("ledger: free slots: %w", err)
	}
	counts := map[string]int{}
	for rows.Next() {
		var h string
		var n int
		if err := rows.Scan(&h, &n); err != nil {
			rows.Close()
			return 0, err
		}
		counts[h] = n
	}
	rows.Close()
	total := 0
	for h, n := range counts {
		if _, err := tx.ExecContext(ctx, `UPDATE obb_hosts SET running = MAX(running - ?, 0) WHERE name = ?`, n, h); err != nil {
			return 0, fmt.Errorf("ledger: %w", err)
		}
		total += n
	}
	if total > 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM obb_slots WHERE `+where, args...); err != nil {
			return 0, fmt.Errorf("ledger: free slots: %w", err)
		}
	}
	return total, tx.Commit()
}

// SetDraining implements Ledger.
func (l *SQLLedger) SetDraining(ctx context.Context, host string, draining bool) error {
	v := 0
	if draining {
		v = 1
	}
	res, err := l.db.ExecContext(ctx, l.q(`UPDATE obb_hosts SET draining = ? WHERE name = ?`), v, host)
	if err != nil {
		return fmt.Errorf("ledger: drain %s: %w", host, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errUnknownHost(host)
	}
	return nil
}

// Load implements Ledger.
func (l *SQLLedger) Load(ctx context.Context) (map[string]Load, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT name, running, draining FROM obb_hosts`)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	out := map[string]Load{}
	for rows.Next() {
		var name string
		var running, draining int
		if err := rows.Scan(&name, &running, &draining); err != nil {
			return nil, err
		}
		out[name] = Load{Running: running, Draining: draining != 0}
	}
	return out, rows.Err()
}

// Remember implements Ledger.
func (l *SQLLedger) Remember(ctx context.Context, key, host string) error {
	_, err := l.db.ExecContext(ctx, l.q(`INSERT INTO obb_affinity (key, host) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET host = excluded.host`), key, host)
	if err != nil {
		return fmt.Errorf("ledger: affinity: %w", err)
	}
	return nil
}

// Last implements Ledger.
func (l *SQLLedger) Last(ctx context.Context, key string) (string, error) {
	var host string
	err := l.db.QueryRowContext(ctx, l.q(`SELECT host FROM obb_affinity WHERE key = ?`), key).Scan(&host)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("ledger: affinity: %w", err)
	}
	return host, nil
}
