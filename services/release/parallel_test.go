package release

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestForEachBoundsAndStops(t *testing.T) {
	var running, peak, calls atomic.Int32
	err := forEach(context.Background(), 20, 4, func(ctx context.Context, i int) error {
		calls.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if peak.Load() > 4 || calls.Load() != 20 {
		t.Errorf("peak %d calls %d, want <= 4 and 20", peak.Load(), calls.Load())
	}

	boom := errors.New("boom")
	calls.Store(0)
	err = forEach(context.Background(), 100, 2, func(ctx context.Context, i int) error {
		calls.Add(1)
		if i == 0 {
			return boom
		}
		<-ctx.Done() // the others see the cancel
		return ctx.Err()
	})
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want boom", err)
	}
	if calls.Load() > 3 {
		t.Errorf("%d calls started after the first error", calls.Load())
	}
}
