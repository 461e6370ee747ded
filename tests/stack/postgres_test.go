package stack

import (
	"context"
	"testing"
	"time"
)

func TestPostgresStartsAndStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := StartPostgres(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := p.SQL(ctx, "SELECT 1+1"); err != nil || out != "2" {
		t.Errorf("SELECT 1+1 = %q, %v", out, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
}
