package openbalena

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"time"
)

// RetryPolicy bounds the retries of one request.
type RetryPolicy struct {
	// Attempts is the total number of tries (1 = no retry).
	Attempts int
	// Initial is the first wait; it doubles up to Max.
	Initial, Max time.Duration
}

// DefaultRetry: 5 tries, waiting about 200ms, 400ms, 800ms, 1.6s (capped at 3s).
func DefaultRetry() RetryPolicy {
	return RetryPolicy{Attempts: 5, Initial: 200 * time.Millisecond, Max: 3 * time.Second}
}

// wait sleeps before try number next (1-based retries), or returns ctx's error.
func (p RetryPolicy) wait(ctx context.Context, retry int) error {
	d := p.Initial << (retry - 1)
	if d > p.Max || d <= 0 {
		d = p.Max
	}
	// Equal jitter: concurrent pushes that failed together do not retry together.
	if half := int64(d / 2); half > 0 {
		d = time.Duration(half + rand.Int64N(half+1))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// retryableStatus: idempotent requests (GET, PATCH) are retried on 5xx.
// A POST never is: the real API answers a missing required field with an
// empty 500, and a POST that reached the API may have created its row.
func retryableStatus(method string, code int) bool {
	return method != http.MethodPost && code >= 500
}

// retryableNetErr: idempotent requests are retried on any transport error;
// a POST only when the connection was never made, so the API cannot have
// seen it.
func retryableNetErr(ctx context.Context, method string, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if method != http.MethodPost {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
