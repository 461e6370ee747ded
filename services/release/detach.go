package release

import (
	"context"
	"time"
)

// detachedTimeout bounds a write that must complete even when the caller
// goes away.
const detachedTimeout = 30 * time.Second

// detach returns a context that keeps ctx's values but not its
// cancellation, bounded by detachedTimeout. It is for writes whose result
// must be known: a POST that creates a running row (its id is needed to
// end it), the PATCHes that end rows, and the cleanup after a failure.
func detach(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), detachedTimeout)
}
