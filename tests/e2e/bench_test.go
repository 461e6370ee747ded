package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
	"github.com/open-balena-builder/builder/tests/stack"
)

// benchProject is examples/hello with a nonce, so that every run really
// builds and pushes a new layer (raw and through the builder alike).
func benchProject(b *testing.B) string {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	dir := b.TempDir()
	for name, body := range map[string]string{
		"Dockerfile": "FROM busybox\nCOPY nonce /nonce\nRUN echo \"hello from $(uname -m)\" > /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n",
		"nonce":      hex.EncodeToString(nonce),
	} {
		if err := writeFile(dir, name, body); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// rawBuildPush is `docker build` + `docker push` of dir on the amd64 daemon,
// through the same Engine API calls, with a registry token.
func rawBuildPush(ctx context.Context, b *testing.B, dir string) {
	h := make([]byte, 16)
	rand.Read(h)
	repo := "v2/" + hex.EncodeToString(h)
	ref := env.Registry.Addr() + "/" + repo + ":latest"
	e, err := stack.NewEngine(env.AMD64.Host())
	if err != nil {
		b.Fatal(err)
	}
	q := url.Values{"t": {ref}, "rm": {"1"}, "forcerm": {"1"}}
	if _, err := e.Stream(ctx, http.MethodPost, "/build?"+q.Encode(), plainTar(dir), http.Header{"Content-Type": {"application/x-tar"}}, nil); err != nil {
		b.Fatal(err)
	}
	auth, _ := json.Marshal(map[string]string{"registrytoken": registryToken(b, repo, "pull,push")})
	hdr := http.Header{"X-Registry-Auth": {base64.URLEncoding.EncodeToString(auth)}}
	if _, err := e.Stream(ctx, http.MethodPost, "/images/"+url.PathEscape(env.Registry.Addr()+"/"+repo)+"/push?tag=latest", nil, hdr, nil); err != nil {
		b.Fatal(err)
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkPushOverhead compares a push of examples/hello (plus a nonce)
// through the builder with docker build + docker push of the same context
// on the same daemon. Reported: medians of raw, builder and their difference.
func BenchmarkPushOverhead(b *testing.B) {
	f := newFixture(b, "genericx86-64-ext")
	ctx := context.Background()
	var raw, builder, overhead []time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		rawBuildPush(ctx, b, benchProject(b))
		r := time.Since(start)

		dir := benchProject(b)
		start = time.Now()
		res, err := harness.Push(ctx, env.BuilderURL, dir, harness.PushOptions{Slug: f.fleet.Slug, Token: f.token})
		p := time.Since(start)
		if err != nil || res.IsError {
			b.Fatalf("push: %v\n%s", err, res.Text())
		}
		raw, builder, overhead = append(raw, r), append(builder, p), append(overhead, p-r)
	}
	b.ReportMetric(float64(median(raw).Microseconds())/1000, "raw-ms")
	b.ReportMetric(float64(median(builder).Microseconds())/1000, "builder-ms")
	b.ReportMetric(float64(median(overhead).Microseconds())/1000, "overhead-ms")
}

// BenchmarkFirstByte measures the time from the request headers being sent
// to the first response byte (the buildLogId element) for a tiny push.
func BenchmarkFirstByte(b *testing.B) {
	f := newFixture(b, "genericx86-64-ext")
	var firsts []time.Duration
	for i := 0; i < b.N; i++ {
		dir := benchProject(b)
		var wrote, first time.Time
		trace := &httptrace.ClientTrace{
			WroteHeaders:         func() { wrote = time.Now() },
			GotFirstResponseByte: func() { first = time.Now() },
		}
		ctx := httptrace.WithClientTrace(context.Background(), trace)
		res, err := harness.Push(ctx, env.BuilderURL, dir, harness.PushOptions{Slug: f.fleet.Slug, Token: f.token})
		if err != nil || res.IsError || !res.FirstIsBuildLogID {
			b.Fatalf("push: %v", err)
		}
		firsts = append(firsts, first.Sub(wrote))
	}
	b.ReportMetric(float64(median(firsts).Microseconds())/1000, "first-byte-ms")
}
