package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/open-balena-builder/builder/platform/sqlstore"
	"github.com/open-balena-builder/builder/services/ingest/journal"
	"github.com/open-balena-builder/builder/services/ingest/journal/journaltest"
	"github.com/open-balena-builder/builder/services/scheduler"
	"github.com/open-balena-builder/builder/services/scheduler/ledgertest"
)

var dbSeq atomic.Int64

// freshDB creates an empty database on the server and opens it (schema
// migrated), closed at the end of the test.
func freshDB(t *testing.T) *sqlstore.DB { return freshDBB(t) }

func freshDBB(t testing.TB) *sqlstore.DB {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("obb_test_%d", dbSeq.Add(1))
	if _, err := pg.SQL(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	url := pg.URL()
	if !strings.Contains(url, "/postgres?") {
		t.Fatalf("unexpected URL shape %q", url)
	}
	db, err := sqlstore.OpenPostgres(ctx, strings.Replace(url, "/postgres?", "/"+name+"?", 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Two builders on one PostgreSQL: their ledgers share slots, drains and
// affinity, and max_concurrent holds under concurrent takes.
func TestPostgresLedgerKeepsTheContract(t *testing.T) {
	ledgertest.RunContract(t, func(t *testing.T) (scheduler.Ledger, scheduler.Ledger) {
		db := freshDB(t)
		return scheduler.NewSQLLedger(db, "a"), scheduler.NewSQLLedger(db, "b")
	})
}

func TestPostgresJournalKeepsTheContract(t *testing.T) {
	journaltest.RunContract(t, journal.New(freshDB(t)))
}

// go test -run '^$' -bench Dispatch ./tests/store
func BenchmarkDispatchPostgres(b *testing.B) {
	db := freshDBB(b)
	s, err := scheduler.New(scheduler.Config{Ledger: scheduler.NewSQLLedger(db, "bench"), Instance: "bench"}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ledgertest.BenchmarkDispatch(b, s)
}
