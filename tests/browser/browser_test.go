// Package browser drives the operator surface's build page in a headless
// Chromium (Debian's chromium, installed by scripts/deps.sh) against a
// real stack: sign in with the operator token, see a running build, follow
// its log live, drain and resume a host, cancel the build, all by clicking.
//
// OBB_SCREENSHOT=1 also writes docs/build-page.png (the page with a build's
// live log).
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/open-balena-builder/builder/tests/harness"
)

// slow prints the clock every second (the page must show lines written
// after it opened), some HTML (the page must show it as text) and runs long
// enough to be cancelled; quick is a build that ended before the page opened.
const (
	slow = `FROM busybox
RUN echo '<b id="injected">not bold</b><img src=x id="injected-img">' && i=0; while [ $i -lt 900 ]; do echo "tick $(date +%s)"; i=$((i+1)); sleep 1; done
`
	quick = "FROM busybox\nRUN echo built in no time\n"
)

func headless(t *testing.T, s *harness.Stack, slug, token, dockerfile string) int64 {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, err := harness.PushHeadless(ctx, s.BuilderURL, dir, harness.PushOptions{Slug: slug, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type host struct {
	Name          string `json:"name"`
	Running       int    `json:"running"`
	MaxConcurrent int    `json:"maxConcurrent"`
	Draining      bool   `json:"draining"`
}

// hosts is GET /v1/hosts on the operator surface.
func hosts(t *testing.T, s *harness.Stack) []host {
	t.Helper()
	res, err := s.Admin(http.MethodGet, "/v1/hosts", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/hosts: %d %s", res.StatusCode, b)
	}
	var out struct{ Hosts []host }
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("GET /v1/hosts: %v: %s", err, b)
	}
	return out.Hosts
}

// eventually polls cond every 200 ms until it holds or a minute passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after a minute, still not: %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestBuildPage(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("no chromium (scripts/deps.sh installs Debian's): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := harness.Start(ctx, harness.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	token := s.API.AddUser("pat")
	fleet := s.API.AddFleet("pat", "kiosk", "genericx86-64-ext")
	done := headless(t, s, fleet.Slug, token, quick)
	eventually(t, "the quick build succeeds", func() bool {
		r, _ := s.API.Release(done)
		return r.Status == "success"
	})
	id := headless(t, s, fleet.Slug, token, slow)
	build := strconv.FormatInt(id, 10)

	hs := hosts(t, s)
	if len(hs) == 0 {
		t.Fatal("GET /v1/hosts lists no host")
	}
	hostName := hs[0].Name

	// The browser.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1100),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()

	// Exceptions and CSP violations in the page fail the test.
	var mu sync.Mutex
	var pageErrors []string
	note := func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		pageErrors = append(pageErrors, msg)
	}
	exceptions := chromedp.Events(bctx, runtime.ExceptionThrown)
	logs := chromedp.Events(bctx, cdplog.EntryAdded)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			note("exception: " + msg)
		}
	}()
	go func() {
		for ev, err := range logs {
			if err != nil {
				return
			}
			if e := ev.Entry; strings.Contains(e.Text, "Content Security Policy") || string(e.Source) == "security" {
				note("security: " + e.Text)
			}
		}
	}()
	// do runs steps with a generous deadline; run returns a value.
	fail := func(what string, err error) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		html, _ := chromedp.Run(c, chromedp.OuterHTML(chromedp.CSS("main")))
		t.Fatalf("%s: %v\npage: %s\nbuilder: %s", what, err, html, s.BuilderLogTail(20))
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 90*time.Second)
		defer cancel()
		if err := chromedp.Do(c, steps...); err != nil {
			fail(what, err)
		}
	}
	eval := func(what, expr string, out any) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		raw, err := chromedp.Run(c, chromedp.Evaluate[[]byte](expr))
		if err == nil {
			err = json.Unmarshal(raw, out)
		}
		if err != nil {
			fail(what, err)
		}
	}
	// poll waits (with a generous deadline) until the expression is true.
	poll := func(what, expr string) {
		t.Helper()
		do(what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(80*time.Second)))
	}

	// Sign in: the page itself needs no token, the data does.
	do("open the page and sign in",
		chromedp.Navigate(s.AdminURL+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), harness.AdminToken),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("app")),
	)
	var session struct {
		Stored string `json:"stored"`
		URL    string `json:"url"`
	}
	eval("read the session", `({stored: sessionStorage.getItem('obb-operator-token'), url: location.href})`, &session)
	if session.Stored != harness.AdminToken || strings.Contains(session.URL, harness.AdminToken) {
		t.Errorf("after sign-in: sessionStorage has %q, URL %q", session.Stored, session.URL)
	}

	// The running build in the queue, with its fleet, user and host.
	row := fmt.Sprintf(`#queue tr[data-build="%s"]`, build)
	do("see the running build in the queue", chromedp.WaitVisible(chromedp.CSS(row)))
	poll("the build's fleet, user and host in the queue", fmt.Sprintf(`(() => { const r = document.querySelector(%q);
		return !!r && r.cells[1].textContent === %q && r.cells[2].textContent === 'pat' && r.cells[4].textContent === %q; })()`,
		row, fleet.Slug, hostName))

	// The finished one among the recent builds, its host read from its log.
	poll("the finished build among the recent ones", fmt.Sprintf(`(() => { const r = document.querySelector('#recent tr[data-build="%d"]');
		return !!r && r.cells[3].textContent === 'succeeded' && r.cells[4].textContent === %q; })()`, done, hostName))

	// Its log, followed live: a tick printed after the page showed the log.
	do("open the build", chromedp.Click(chromedp.CSS(row)), chromedp.WaitVisible(chromedp.ID("build")))
	poll("log lines", `[...document.querySelectorAll('#log .line')].some(l => l.textContent.includes('tick '))`)
	var opened int64
	eval("the page's clock", `Math.floor(Date.now() / 1000)`, &opened)
	poll("a line printed after the log opened", fmt.Sprintf(`[...document.querySelectorAll('#log .line .text')]
		.some(l => { const m = /^tick (\d+)$/.exec(l.textContent); return !!m && Number(m[1]) >= %d; })`, opened+2))

	// balena's colours, and the build's HTML as text.
	var colours map[string]string
	eval("the tags' colours", `(() => {
		const out = {};
		for (const t of document.querySelectorAll('#log .tag')) out[t.textContent] = getComputedStyle(t).color;
		return out; })()`, &colours)
	for tag, want := range map[string]string{"[Info]": "rgb(57, 197, 207)", "[main]": "rgb(88, 166, 255)"} {
		if colours[tag] != want {
			t.Errorf("tag %s is %q, want %s (all: %v)", tag, colours[tag], want, colours)
		}
	}
	var injected struct {
		Elements int  `json:"elements"`
		AsText   bool `json:"asText"`
	}
	eval("the build's HTML", `({
		elements: document.querySelectorAll('#injected, #injected-img, #log b, #log img').length,
		asText: [...document.querySelectorAll('#log .line')].some(l => l.textContent.includes('<b id="injected">not bold</b>')) })`, &injected)
	if injected.Elements != 0 || !injected.AsText {
		t.Errorf("the build's output %+v: want it shown as text, no elements made of it", injected)
	}

	if os.Getenv("OBB_SCREENSHOT") == "1" {
		root, err := harness.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		poll("a screenful of log", `document.querySelectorAll('#log .line').length >= 24`)
		c, cancel := context.WithTimeout(bctx, time.Minute)
		png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
		cancel()
		if err != nil {
			fail("screenshot", err)
		}
		if err := os.MkdirAll(filepath.Join(root, "docs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "docs", "build-page.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote docs/build-page.png")
	}

	// Drain the host by clicking, and resume it.
	button := func(action string) string {
		return fmt.Sprintf(`#hosts button[data-host=%q][data-action=%q]`, hostName, action)
	}
	isDraining := func() bool {
		for _, h := range hosts(t, s) {
			if h.Name == hostName {
				return h.Draining
			}
		}
		t.Fatalf("host %s is gone from GET /v1/hosts", hostName)
		return false
	}
	if isDraining() {
		t.Fatalf("host %s drains before the click", hostName)
	}
	do("drain the host", chromedp.Click(chromedp.CSS(button("drain"))))
	eventually(t, "GET /v1/hosts says "+hostName+" drains", isDraining)
	do("the page says draining", chromedp.WaitVisible(chromedp.CSS(button("resume"))))
	do("resume the host", chromedp.Click(chromedp.CSS(button("resume"))))
	eventually(t, "GET /v1/hosts says "+hostName+" takes builds again", func() bool { return !isDraining() })
	do("the page says active", chromedp.WaitVisible(chromedp.CSS(button("drain"))))

	// Cancel the build by clicking.
	if r, _ := s.API.Release(id); r.Status != "running" {
		t.Fatalf("before the cancel click the release is %q", r.Status)
	}
	do("cancel the build",
		chromedp.Click(chromedp.ID("cancel")),
		chromedp.WaitVisible(chromedp.ID("cancel-yes")),
		chromedp.SendKeys(chromedp.ID("cancel-reason"), "from the browser test"),
		chromedp.Click(chromedp.ID("cancel-yes")),
	)
	eventually(t, "the release is cancelled", func() bool {
		r, _ := s.API.Release(id)
		return r.Status == "cancelled"
	})
	poll("the page shows the build cancelled", fmt.Sprintf(`(() => {
		const r = document.querySelector('#recent tr[data-build="%s"]');
		return !!r && r.cells[3].textContent === 'cancelled' && document.getElementById('log-status').textContent.includes('cancelled')
			&& [...document.querySelectorAll('#log .line')].some(l => l.textContent.includes('from the browser test')); })()`, build))
	var cancelHidden bool
	eval("no cancel button for a finished build", `document.getElementById('cancel').hidden`, &cancelHidden)
	if !cancelHidden {
		t.Error("the cancel button is still offered for a cancelled build")
	}

	// Signing out forgets the token.
	do("sign out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	var stored string
	eval("the session after sign-out", `sessionStorage.getItem('obb-operator-token') || ''`, &stored)
	if stored != "" {
		t.Errorf("after sign-out sessionStorage still has %q", stored)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(pageErrors) > 0 {
		t.Errorf("the page reported:\n%s", strings.Join(pageErrors, "\n"))
	}
}
