// Command demo starts a local stack (a private dockerd, a registry with
// token auth, an open-balena-api stand-in and `obb serve all`), pushes
// examples/hello exactly as `balena push` does, prints the build as the CLI
// would, then the release and image the API recorded, and stops everything.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	project := filepath.Join(root, "examples", "hello")
	if len(os.Args) > 1 {
		project = os.Args[1]
	}

	fmt.Println("Starting a local stack: open-balena-api stand-in, registry, dockerd (amd64), obb serve all ...")
	start := time.Now()
	s, err := harness.Start(ctx, harness.Options{Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("Stopping the stack ...")
		s.Stop()
	}()
	fmt.Printf("Stack up in %s; builder at %s\n\n", time.Since(start).Round(time.Millisecond), s.BuilderURL)

	token := s.API.AddUser("demo")
	fleet := s.API.AddFleet("demo", "hello-fleet", "genericx86-64-ext")
	fmt.Printf("$ balena push %s --source %s\n", fleet.Slug, project)
	res, err := harness.Push(ctx, s.BuilderURL, project, harness.PushOptions{
		Slug: fleet.Slug, Token: token,
		OnMessage: func(m harness.Message) {
			if m.Type == "" {
				fmt.Println(m.Message)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	if res.Status != 200 {
		return fmt.Errorf("push: HTTP %d %s", res.Status, res.Body)
	}

	rel, ok := s.API.Release(res.ReleaseID)
	if !ok {
		return fmt.Errorf("release %d is not in the API", res.ReleaseID)
	}
	fmt.Printf("\nopen-balena-api now holds:\n  release %d  commit %s  status %s  final %v\n", rel.ID, rel.Commit, rel.Status, rel.IsFinal)
	for _, ri := range s.API.ReleaseImages() {
		if ri.Release != rel.ID {
			continue
		}
		img, _ := s.API.Image(ri.Image)
		fmt.Printf("  image %d    status %s  %s@%s (%s bytes)\n", img.ID, img.Status, img.Location, img.ContentHash, img.ImageSize)
	}
	if target, ok := s.API.FleetTarget(fleet.ID); ok {
		fmt.Printf("  fleet %s now runs release %d\n", fleet.Slug, target)
	}
	if res.IsError || rel.Status != "success" {
		return fmt.Errorf("the build failed (release status %s)", rel.Status)
	}
	return nil
}
