package executor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/open-balena-builder/builder/plugins/sdk"
)

// Plugins launches executor plugin binaries on first use and keeps one
// process per plugin. A plugin that exited (crashed) is launched again on
// the next call; its crash failed only the jobs it was running.
type Plugins struct {
	dir string
	log *slog.Logger

	mu      sync.Mutex
	running map[string]*sdk.Client
}

// NewPlugins finds plugins in dir as obb-plugin-<name>.
func NewPlugins(dir string, logger *slog.Logger) *Plugins {
	return &Plugins{dir: dir, log: logger, running: map[string]*sdk.Client{}}
}

// Path is where the binary of plugin name is expected.
func (p *Plugins) Path(name string) string { return filepath.Join(p.dir, "obb-plugin-"+name) }

// Get returns the running plugin called name, launching it if needed.
func (p *Plugins) Get(ctx context.Context, name string) (sdk.Executor, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.running[name]; ok && !c.Exited() {
		return c.Executor, nil
	} else if ok {
		p.log.Warn("plugin exited; launching it again", "plugin", name)
		c.Kill()
		delete(p.running, name)
	}
	path := p.Path(name)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("plugin %q: %w (build it with `make build`, or set OBB_PLUGIN_DIR)", name, err)
	}
	c, err := sdk.Launch(ctx, path, p.log.With("plugin", name))
	if err != nil {
		return nil, err
	}
	info, err := c.Executor.Info(ctx)
	if err != nil {
		c.Kill()
		return nil, fmt.Errorf("plugin %q: info: %w", name, err)
	}
	p.log.Info("plugin started", "plugin", info.GetName(), "version", info.GetVersion(), "api", c.Version)
	p.running[name] = c
	return c.Executor, nil
}

// Close stops every plugin process.
func (p *Plugins) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, c := range p.running {
		c.Kill()
		delete(p.running, name)
	}
}
