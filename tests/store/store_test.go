// Package store runs the in-flight store's contract against a real
// PostgreSQL server (Debian's postgresql, started privately here), the
// same suite the SQLite store passes in its package.
package store

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/services/ingest/inflight"
	"github.com/open-balena-builder/builder/services/ingest/inflight/inflighttest"
	"github.com/open-balena-builder/builder/tests/harness"
	"github.com/open-balena-builder/builder/tests/stack"
)

var pg *stack.Postgres

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	if _, err := harness.Deps(ctx); err != nil { // installs postgresql if missing
		fmt.Fprintln(os.Stderr, "store:", err)
		os.Exit(1)
	}
	p, err := stack.StartPostgres(ctx, nil)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "store: cannot start PostgreSQL:", err)
		os.Exit(1)
	}
	pg = p
	code := m.Run()
	if err := p.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "store: stop PostgreSQL:", err)
	}
	os.Exit(code)
}

func TestPostgresKeepsTheContract(t *testing.T) {
	ctx := context.Background()
	s, err := inflight.OpenPostgres(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	inflighttest.RunContract(t, s, func(t *testing.T) inflight.Store {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, err := inflight.OpenPostgres(ctx, pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		return s2
	})
}

// Several builders starting at once against one database migrate it once.
func TestPostgresMigratesOnceUnderConcurrentStarts(t *testing.T) {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := inflight.OpenPostgres(ctx, pg.URL())
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestPostgresUnreachableIsAClearError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := inflight.OpenPostgres(ctx, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("opened a database nobody serves")
	}
	t.Logf("%v", err)
}
