package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"

	"github.com/hashicorp/go-plugin"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
)

// Client is a running plugin process seen from the host.
type Client struct {
	// Executor calls the plugin. After the process dies its calls return
	// errors (codes.Unavailable), never panic.
	Executor Executor
	// Version is the negotiated plugin API version.
	Version int

	client *plugin.Client
	stop   context.CancelFunc
}

// Kill stops the plugin process (gracefully first) and waits for it to exit.
func (c *Client) Kill() {
	c.client.Kill()
	c.stop()
}

// Exited reports whether the plugin process has exited.
func (c *Client) Exited() bool { return c.client.Exited() }

// Launch starts the plugin binary at path, performs the handshake and
// returns a Client. Cancelling ctx during start-up kills the process; once
// Launch has returned, ctx no longer matters and the caller owns Kill.
func Launch(ctx context.Context, path string, logger *slog.Logger) (*Client, error) {
	// go-plugin's Kill waits for a pending start-up (it holds the client's
	// lock), so start-up is cut short by killing the process through its own
	// context instead. That context lives as long as the plugin.
	procCtx, stop := context.WithCancel(context.Background())
	cmd := exec.CommandContext(procCtx, path)
	cmd.Env = pluginEnv(os.Getenv)
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: PluginSets(nil),
		Cmd:              cmd,
		// The plugin gets none of the builder's environment (tokens, TLS
		// keys, DOCKER_*): what a job needs travels in its spec.
		SkipHostEnv: true,
		// The plugin connection is mTLS with keys made for this launch.
		AutoMTLS:         true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler())},
		Logger:           newHCLogger(logger, "plugin"),
		Managed:          false,
	})

	type started struct {
		c   *Client
		err error
	}
	done := make(chan started, 1)
	go func() {
		c, err := dispense(pc, stop)
		done <- started{c, err}
	}()
	var s started
	select {
	case s = <-done:
	case <-ctx.Done():
		stop()
		<-done
		s = started{err: ctx.Err()}
	}
	if s.err != nil {
		pc.Kill()
		stop()
		return nil, fmt.Errorf("launch plugin %s: %w", path, s.err)
	}
	return s.c, nil
}

// dispense connects to the started plugin and returns its Executor.
func dispense(pc *plugin.Client, stop context.CancelFunc) (*Client, error) {
	rpc, err := pc.Client()
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	raw, err := rpc.Dispense(PluginName)
	if err != nil {
		return nil, fmt.Errorf("dispense %q: %w", PluginName, err)
	}
	exec, ok := raw.(Executor)
	if !ok {
		return nil, errors.New("dispensed plugin is not an Executor")
	}
	return &Client{Executor: exec, Version: pc.NegotiatedVersion(), client: pc, stop: stop}, nil
}

// pluginEnv is the whole environment of a plugin process: where programs
// and temporary files are, nothing else.
func pluginEnv(getenv func(string) string) []string {
	var env []string
	for _, k := range []string{"PATH", "TMPDIR"} {
		if v := getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env
}
