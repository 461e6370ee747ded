package sqlstore

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestLeases(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "obb.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Unix(1700000000, 0)
	l := NewLeases(db)
	l.now = func() time.Time { return now }
	for _, id := range []string{"a", "b"} {
		if err := l.Beat(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(20 * time.Second)
	if err := l.Beat(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Expired(ctx, "b", 10*time.Second); err != nil || !slices.Equal(got, []string{"a"}) {
		t.Errorf("Expired = %v, %v; want [a]", got, err)
	}
	if got, _ := l.Expired(ctx, "a", 10*time.Second); len(got) != 0 {
		t.Errorf("Expired(self a) = %v: self is never expired to itself", got)
	}
	if got, _ := l.Live(ctx, 10*time.Second); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Live = %v, want [b]", got)
	}
	if err := l.Forget(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Expired(ctx, "b", time.Nanosecond); len(got) != 0 {
		t.Errorf("after Forget: %v", got)
	}
}
