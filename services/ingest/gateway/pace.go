package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UploadLimits bound how long an upload may take: a whole upload takes at
// most Timeout, and in every RateWindow (counted from the start of the
// upload) at least MinRate×RateWindow bytes must arrive, so that a client
// cannot hold a connection, a build slot and a partial upload by trickling
// (or sending nothing: a Read blocked on a silent client is ended). Time
// the gateway itself is held back (by ingest writing to disk) is not counted
// against the client. Zero fields take the defaults.
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
// answered with 408 Request Timeout (codes.DeadlineExceeded in gRPC terms).
type errPace struct{ msg string }

func (e *errPace) Error() string { return e.msg }

// GRPCStatus makes the error codes.DeadlineExceeded for status.Convert.
func (e *errPace) GRPCStatus() *status.Status { return status.New(codes.DeadlineExceeded, e.msg) }

// pacedBody is a request body watched by a timer: when the upload is too
// slow or too long, the connection's read deadline is moved to now, which
// ends a Read blocked on a silent client, and Read reports why.
//
// The rate is the client's: time the gateway spends outside Read (sending
// to ingest, which may hold it back while it writes to disk) does not count
// against it, the minimum is prorated to the time spent waiting in Read.
type pacedBody struct {
	r    io.Reader
	stop chan struct{}
	once sync.Once

	mu       sync.Mutex
	n        int64         // bytes read
	outside  time.Duration // spent outside Read, closed intervals
	outSince time.Time     // when the last Read returned (zero: in Read)
	reason   *errPace
}

// pace starts watching body; call close when the upload has ended.
func pace(body io.Reader, rc *http.ResponseController, lim UploadLimits) *pacedBody {
	lim = lim.withDefaults()
	start := time.Now()
	p := &pacedBody{r: body, stop: make(chan struct{}), outSince: start}
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
		// The client's time: wall time less the time spent outside Read.
		// A window is judged once the client had at least half of one
		// (a silent client: at the first tick).
		last, lastN, lastOut := start, int64(0), time.Duration(0)
		var got int64
		var waited time.Duration
		for {
			select {
			case <-p.stop:
				return
			case <-deadline.C:
				fail(&errPace{fmt.Sprintf("upload took longer than %s (OBB_UPLOAD_TIMEOUT)", duration(lim.Timeout))})
				return
			case <-tick.C:
				now := time.Now() // not the tick's time: a Read may have returned since
				n, out := p.counters(now)
				got += n - lastN
				waited += now.Sub(last) - (out - lastOut)
				last, lastN, lastOut = now, n, out
				if waited < lim.RateWindow/2 {
					continue // mostly held back by ingest: not the client's doing
				}
				if need := int64(float64(lim.MinRate) * waited.Seconds()); got < need {
					fail(&errPace{fmt.Sprintf("upload too slow: %d bytes in the last %s, the minimum is %s (OBB_UPLOAD_MIN_RATE)", got, duration(lim.RateWindow), rate(lim.MinRate))})
					return
				}
				got, waited = 0, 0
			}
		}
	}()
	return p
}

// counters returns the bytes read and the time spent outside Read so far.
func (p *pacedBody) counters(now time.Time) (int64, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.outside
	if !p.outSince.IsZero() {
		out += now.Sub(p.outSince)
	}
	return p.n, out
}

func (p *pacedBody) Read(b []byte) (int, error) {
	p.mu.Lock()
	if why := p.reason; why != nil {
		p.mu.Unlock()
		return 0, why
	}
	p.outside += time.Since(p.outSince)
	p.outSince = time.Time{}
	p.mu.Unlock()

	n, err := p.r.Read(b)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(n)
	p.outSince = time.Now()
	if err != nil && !errors.Is(err, io.EOF) && p.reason != nil {
		return n, p.reason
	}
	return n, err
}

func (p *pacedBody) close() { p.once.Do(func() { close(p.stop) }) }

// duration formats a limit for a message: "1h", "30s", "1h30m", "200ms".
func duration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// rate formats bytes per second: "16 KiB/s", "1 MiB/s", "1000 bytes/s".
func rate(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB/s", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB/s", n>>10)
	}
	return fmt.Sprintf("%d bytes/s", n)
}
