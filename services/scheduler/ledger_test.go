package scheduler_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/open-balena-builder/builder/platform/sqlstore"
	"github.com/open-balena-builder/builder/services/scheduler"
	"github.com/open-balena-builder/builder/services/scheduler/ledgertest"
)

func TestMemoryLedger(t *testing.T) {
	ledgertest.RunContract(t, func(t *testing.T) (scheduler.Ledger, scheduler.Ledger) {
		l := scheduler.NewMemoryLedgers("a", "b")
		return l[0], l[1]
	})
}

func TestSQLiteLedger(t *testing.T) {
	ledgertest.RunContract(t, func(t *testing.T) (scheduler.Ledger, scheduler.Ledger) {
		db, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "obb.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return scheduler.NewSQLLedger(db, "a"), scheduler.NewSQLLedger(db, "b")
	})
}

func newBenchServer(b *testing.B, l scheduler.Ledger) *scheduler.Server {
	s, err := scheduler.New(scheduler.Config{Ledger: l, Instance: "bench"}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// go test -run '^$' -bench Dispatch ./services/scheduler (PostgreSQL: tests/store)
func BenchmarkDispatchMemory(b *testing.B) {
	ledgertest.BenchmarkDispatch(b, newBenchServer(b, scheduler.NewMemoryLedger("bench")))
}

func BenchmarkDispatchSQLite(b *testing.B) {
	db, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "obb.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ledgertest.BenchmarkDispatch(b, newBenchServer(b, scheduler.NewSQLLedger(db, "bench")))
}
