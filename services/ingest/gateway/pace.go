package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// UploadLimits bound how long an upload may take: a whole upload takes at
// most Timeout, and every RateWindow at least MinRate bytes per second must
// arrive, so that a client cannot hold a connection, a build slot and a
// partial upload by trickling (or sending nothing). Zero fields take the
// defaults.
type UploadLimits struct {
	Timeout    time.Duration // OBB_UPLOAD_TIMEOUT, default 1h
	MinRate    int64         // OBB_UPLOAD_MIN_RATE in bytes per second, default 16 KiB/s
	RateWindow time.Duration // OBB_UPLOAD_RATE_WINDOW, default 30s
}

// Defaults of UploadLimits.
const (
	DefaultUploadTimeout = time.Hour
	DefaultUploadMinRate = 16 << 10
	DefaultRateWindow    = 30 * time.Second
)

func (l UploadLimits) withDefaults() UploadLimits {
	if l.Timeout <= 0 {
		l.Timeout = DefaultUploadTimeout
	}
	if l.MinRate <= 0 {
		l.MinRate = DefaultUploadMinRate
	}
	if l.RateWindow <= 0 {
		l.RateWindow = DefaultRateWindow
	}
	return l
}

// errPace is an upload cut off for taking too long or arriving too slowly:
// answered with 408 Request Timeout.
type errPace struct{ msg string }

func (e *errPace) Error() string { return e.msg }

// pacedBody is a request body watched by a timer: when the upload is too
// slow or too long, the connection's read deadline is moved to now, which
// ends a Read blocked on a silent client, and Read reports why.
type pacedBody struct {
	r    io.Reader
	n    atomic.Int64
	stop chan struct{}

	mu     sync.Mutex
	reason *errPace
	once   sync.Once
}

// pace starts watching body; call close when the upload has ended.
func pace(body io.Reader, rc *http.ResponseController, lim UploadLimits) *pacedBody {
	lim = lim.withDefaults()
	p := &pacedBody{r: body, stop: make(chan struct{})}
	fail := func(e *errPace) {
		p.mu.Lock()
		if p.reason == nil {
			p.reason = e
		}
		p.mu.Unlock()
		_ = rc.SetReadDeadline(time.Now()) // unblocks a pending Read
	}
	go func() {
		deadline := time.NewTimer(lim.Timeout)
		defer deadline.Stop()
		tick := time.NewTicker(lim.RateWindow)
		defer tick.Stop()
		var last int64
		need := int64(float64(lim.MinRate) * lim.RateWindow.Seconds())
		for {
			select {
			case <-p.stop:
				return
			case <-deadline.C:
				fail(&errPace{fmt.Sprintf("the upload took longer than %s (OBB_UPLOAD_TIMEOUT)", lim.Timeout)})
				return
			case <-tick.C:
				n := p.n.Load()
				if got := n - last; got < need {
					fail(&errPace{fmt.Sprintf("the upload is too slow: %d bytes in the last %s, the minimum is %d bytes/s (OBB_UPLOAD_MIN_RATE)", got, lim.RateWindow, lim.MinRate)})
					return
				}
				last = n
			}
		}
	}()
	return p
}

func (p *pacedBody) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	if err != nil && !errors.Is(err, io.EOF) {
		if why := p.err(); why != nil {
			return n, why
		}
	}
	return n, err
}

func (p *pacedBody) err() *errPace {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

func (p *pacedBody) close() { p.once.Do(func() { close(p.stop) }) }
