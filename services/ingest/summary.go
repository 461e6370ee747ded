package ingest

import (
	"fmt"
	"strings"
	"time"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

// summarize tells the user how the build ended, as balenaCloud does.
func (s *Server) summarize(b *build, final buildv1.BuildState, why string, took time.Duration) {
	switch final {
	case buildv1.BuildState_BUILD_STATE_SUCCEEDED:
		b.say(buildv1.Level_LEVEL_SUCCESS, "Successfully uploaded images")
		if b.draft {
			b.say(buildv1.Level_LEVEL_SUCCESS, "Draft release successfully created! It is not deployed until finalized.")
		} else {
			b.say(buildv1.Level_LEVEL_SUCCESS, "Release successfully created!")
		}
		b.info("Release: %s (id: %d)", b.commit, b.releaseID)
		for _, line := range s.table(b) {
			b.say(buildv1.Level_LEVEL_UNSPECIFIED, "%s", line)
		}
		b.info("Build finished in %s", seconds(took))
	case buildv1.BuildState_BUILD_STATE_CANCELLED:
		b.say(buildv1.Level_LEVEL_ERROR, "Build cancelled: %s", firstNonEmpty(why, "cancelled"))
		b.say(buildv1.Level_LEVEL_ERROR, "Not deploying release %s (id: %d).", b.commit, b.releaseID)
	default:
		b.say(buildv1.Level_LEVEL_ERROR, "Some services failed to build:")
		var failures []string
		for _, svc := range b.plan.Services {
			run := b.service(svc.Name)
			b.mu.Lock()
			failure := run.failure
			b.mu.Unlock()
			if failure != "" {
				failures = append(failures, svc.Name+": "+failure)
				b.say(buildv1.Level_LEVEL_ERROR, "  %s: %s", svc.Name, failure)
			}
		}
		b.say(buildv1.Level_LEVEL_ERROR, "Not deploying release %s (id: %d).", b.commit, b.releaseID)
		// The last line says which service failed and why.
		if len(failures) == 0 {
			failures = []string{firstNonEmpty(why, "unknown error")}
		}
		b.say(buildv1.Level_LEVEL_ERROR, "Build failed: %s", failures[0])
	}
}

// table draws the Service | Image Size | Build Time table.
func (s *Server) table(b *build) []string {
	rows := [][3]string{{"Service", "Image Size", "Build Time"}}
	for _, svc := range b.plan.Services {
		run := b.service(svc.Name)
		b.mu.Lock()
		size, took := run.result.GetSize(), run.ended.Sub(run.started)
		b.mu.Unlock()
		rows = append(rows, [3]string{svc.Name, humanSize(size), seconds(took)})
	}
	var w [3]int
	for _, r := range rows {
		for i, c := range r {
			w[i] = max(w[i], len(c))
		}
	}
	const grey, reset, bold, unbold = "\x1b[90m", "\x1b[39m", "\x1b[1m", "\x1b[22m"
	border := func(l, m, r string) string {
		return grey + l + strings.Repeat("─", w[0]+2) + m + strings.Repeat("─", w[1]+2) + m + strings.Repeat("─", w[2]+2) + r + reset
	}
	row := func(r [3]string, header bool) string {
		var sb strings.Builder
		for i, c := range r {
			sb.WriteString(grey + "│" + reset + " ")
			cell := fmt.Sprintf("%-*s", w[i], c)
			if header {
				cell = bold + cell + unbold
			}
			sb.WriteString(cell + " ")
		}
		return sb.String() + grey + "│" + reset
	}
	out := []string{border("┌", "┬", "┐"), row(rows[0], true), border("├", "┼", "┤")}
	for _, r := range rows[1:] {
		out = append(out, row(r, false))
	}
	return append(out, border("└", "┴", "┘"))
}

func seconds(d time.Duration) string {
	n := int(d.Round(time.Second).Seconds())
	if n == 1 {
		return "1 second"
	}
	return fmt.Sprintf("%d seconds", n)
}

func humanSize(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.2f KB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
